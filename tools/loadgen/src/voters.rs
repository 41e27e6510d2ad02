//! The simulated voters. Voter `i` is `<prefix>-<i>`; voters vote in turn
//! (everyone once, then everyone again, ...). A voter's first vote is
//! option `i mod n`; at each later vote it switches to the next option
//! with probability `change` (from a hash of voter and round, so a run is
//! reproducible), else repeats its choice.
//!
//! Each acknowledged vote is remembered per voter, so a run knows the tally
//! its votes must add up to once they are counted ([`Voters::expected_tally`]).
//! That is exact when a voter never has two votes in flight at once, which
//! the closed loop guarantees (each caller owns its own voters).

use std::sync::atomic::{AtomicU8, Ordering};

use thiserror::Error;

/// No acknowledged vote yet.
const NONE: u8 = u8::MAX;

/// The voters cannot be set up.
#[derive(Debug, Error)]
pub enum VotersError {
    /// No voters, no options, or too many options.
    #[error("{0}")]
    Invalid(String),
}

/// One vote to cast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballot {
    /// The voter's index.
    pub voter: u64,
    /// The voter id sent.
    pub voter_id: String,
    /// Index into the options.
    pub option: usize,
}

/// The population of simulated voters and what each last had acknowledged.
#[derive(Debug)]
pub struct Voters {
    prefix: String,
    options: Vec<String>,
    /// Probability of switching at a repeated vote, in millionths.
    change_ppm: u64,
    /// Each voter's current choice (index into `options`).
    current: Vec<AtomicU8>,
    /// Each voter's last acknowledged choice, or [`NONE`].
    acked: Vec<AtomicU8>,
}

impl Voters {
    /// `count` voters named `<prefix>-<i>` choosing among `options` (ids),
    /// switching at a repeated vote with probability `change` (0..=1).
    pub fn new(
        prefix: &str,
        count: u64,
        change: f64,
        options: Vec<String>,
    ) -> Result<Self, VotersError> {
        if count == 0 {
            return Err(VotersError::Invalid(
                "there must be at least one voter".into(),
            ));
        }
        if options.is_empty() || options.len() >= usize::from(NONE) {
            return Err(VotersError::Invalid(format!(
                "the poll must have 1 to {} options, it has {}",
                NONE - 1,
                options.len()
            )));
        }
        if !(0.0..=1.0).contains(&change) {
            return Err(VotersError::Invalid(format!(
                "the fraction of voters changing their vote is between 0 and 1, not {change}"
            )));
        }
        let count = usize::try_from(count)
            .map_err(|_| VotersError::Invalid(format!("{count} voters is too many")))?;
        let n = options.len();
        Ok(Self {
            prefix: prefix.to_owned(),
            change_ppm: (change * 1_000_000.0).round() as u64,
            current: (0..count).map(|i| AtomicU8::new((i % n) as u8)).collect(),
            acked: (0..count).map(|_| AtomicU8::new(NONE)).collect(),
            options,
        })
    }

    /// How many voters there are.
    pub fn count(&self) -> u64 {
        self.current.len() as u64
    }

    /// The option ids.
    pub fn options(&self) -> &[String] {
        &self.options
    }

    /// The ballot of `voter` (an index below [`Voters::count`]) at its
    /// `round`-th vote (0: its first).
    pub fn ballot(&self, voter: u64, round: u64) -> Ballot {
        let index = (voter % self.count()) as usize;
        let current = &self.current[index];
        let mut option = usize::from(current.load(Ordering::Relaxed));
        if round > 0 && mix(voter, round) % 1_000_000 < self.change_ppm {
            option = (option + 1) % self.options.len();
            current.store(option as u8, Ordering::Relaxed);
        }
        Ballot {
            voter: index as u64,
            voter_id: format!("{}-{index}", self.prefix),
            option,
        }
    }

    /// The id of option `index`.
    pub fn option_id(&self, index: usize) -> &str {
        &self.options[index]
    }

    /// Records that `ballot` was acknowledged.
    pub fn acknowledged(&self, ballot: &Ballot) {
        self.acked[ballot.voter as usize].store(ballot.option as u8, Ordering::Relaxed);
    }

    /// Per option id, how many voters' last acknowledged vote chose it:
    /// the tally once every acknowledged vote is counted.
    pub fn expected_tally(&self) -> Vec<(String, u64)> {
        let mut counts = vec![0u64; self.options.len()];
        for acked in &self.acked {
            let option = acked.load(Ordering::Relaxed);
            if option != NONE {
                counts[usize::from(option)] += 1;
            }
        }
        self.options.iter().cloned().zip(counts).collect()
    }
}

/// A well-mixed 64-bit hash of (voter, round) (splitmix64's finaliser).
fn mix(voter: u64, round: u64) -> u64 {
    let mut z = voter
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(round.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn first_votes_spread_over_the_options_and_nobody_changes_at_zero() {
        let voters = Voters::new("v", 4, 0.0, ab()).unwrap();
        for round in 0..3 {
            for voter in 0..4 {
                let ballot = voters.ballot(voter, round);
                assert_eq!(ballot.option, (voter % 2) as usize);
                assert_eq!(ballot.voter_id, format!("v-{voter}"));
                voters.acknowledged(&ballot);
            }
        }
        assert_eq!(
            voters.expected_tally(),
            vec![("a".into(), 2), ("b".into(), 2)]
        );
    }

    #[test]
    fn a_fraction_of_repeated_votes_switch_and_the_tally_follows_the_last_ack() {
        let voters = Voters::new("v", 10_000, 0.25, ab()).unwrap();
        let (mut switched, mut last) = (0, vec![0u64; 2]);
        for voter in 0..10_000 {
            let first = voters.ballot(voter, 0);
            voters.acknowledged(&first);
            let second = voters.ballot(voter, 1);
            if second.option != first.option {
                switched += 1;
            }
            voters.acknowledged(&second);
            last[second.option] += 1;
        }
        assert!((2_000..3_000).contains(&switched), "{switched} switched");
        assert_eq!(
            voters.expected_tally(),
            vec![("a".into(), last[0]), ("b".into(), last[1])]
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Voters::new("v", 0, 0.1, ab()).is_err());
        assert!(Voters::new("v", 1, 1.5, ab()).is_err());
        assert!(Voters::new("v", 1, 0.1, vec![]).is_err());
    }
}
