//! The sequences a vote service proposes for its push calls.
//!
//! ```text
//! push call ─► Numbering::propose(votes) ─► first (above every number this
//!                                            process proposed or heard of,
//!                                            and not behind its clock)
//! reply     ─► Numbering::heard(first, votes)  (the script renumbered:
//!                                            carry on above its numbers)
//! ```
//!
//! The push script keeps a call's numbers when they are above the last
//! sequence the queue gave out and near Redis' clock
//! ([`super::pusher::CLOCK_SKEW`]), and renumbers the call otherwise, at a
//! cost (docs/BENCHMARKS.md, "Redis per queued vote"). So the vote service
//! proposes what the script would most likely give: the clock in µs, or
//! just past its own last numbers when they ran ahead of it. With one
//! replica every call's numbers stand; with several, a call's stand unless
//! another replica's call of the last few µs numbered past them.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;

/// The next sequence one process may propose, shared by its push calls.
#[derive(Debug, Default)]
pub(super) struct Numbering {
    /// Above every number proposed or heard of so far.
    next: AtomicI64,
}

impl Numbering {
    /// Numbers for a call of `votes` votes, read from the clock now: the
    /// first of `votes` consecutive sequences no other call of this
    /// process was given.
    pub fn propose(&self, votes: usize) -> i64 {
        self.propose_at(Utc::now().timestamp_micros(), votes)
    }

    /// As [`Numbering::propose`], at `now_micros` µs since the epoch.
    pub fn propose_at(&self, now_micros: i64, votes: usize) -> i64 {
        let votes = i64::try_from(votes).unwrap_or(i64::MAX);
        let taken = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                Some(next.max(now_micros).saturating_add(votes))
            });
        // The closure never declines: both arms hold the value before.
        let (Ok(before) | Err(before)) = taken;
        before.max(now_micros)
    }

    /// The script numbered a call of `votes` votes from `first`: later
    /// proposals start above them.
    pub fn heard(&self, first: i64, votes: usize) {
        let votes = i64::try_from(votes).unwrap_or(i64::MAX);
        self.next
            .fetch_max(first.saturating_add(votes), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_follow_the_clock_and_never_overlap() {
        let numbering = Numbering::default();
        assert_eq!(numbering.propose_at(1_000, 3), 1_000);
        // Within the same µs, or with the clock stepped back: after the
        // three numbers given.
        assert_eq!(numbering.propose_at(1_001, 2), 1_003);
        assert_eq!(numbering.propose_at(900, 1), 1_005);
        // The clock moved on past them: the clock again.
        assert_eq!(numbering.propose_at(2_000, 1), 2_000);
    }

    #[test]
    fn numbers_heard_from_the_script_are_not_proposed_again() {
        let numbering = Numbering::default();
        let proposed = numbering.propose_at(1_000, 4);
        numbering.heard(5_000, 4);
        assert_eq!(numbering.propose_at(1_010, 1), 5_004);
        // Numbers below what is known change nothing.
        numbering.heard(proposed, 4);
        assert_eq!(numbering.propose_at(1_020, 1), 5_005);
    }
}
