//! A CastVote request becomes a [`NewVote`], or a [`VoteError`] saying why not.

use std::collections::HashMap;

use chrono::{SubsecRound, Utc};
use thiserror::Error;
use uuid::Uuid;
use votemesh::{
    ballot::{BallotError, check_voter_id},
    idempotency::KeyError,
    poll::Poll,
    queue::{NewVote, QueueError},
};

/// Why a vote was not taken.
#[derive(Debug, Error)]
pub enum VoteError {
    /// The voter id breaks the rules.
    #[error(transparent)]
    BadBallot(#[from] BallotError),
    /// The option is not one of the poll's.
    #[error("option {option:?} is not an option of this poll; the options are: {known}")]
    UnknownOption {
        /// What was sent (cut to 40 characters).
        option: String,
        /// The poll's option ids.
        known: String,
    },
    /// The call's `idempotency-key` metadata breaks the rules.
    #[error(transparent)]
    BadIdempotencyKey(#[from] KeyError),
    /// The call's idempotency key was used, within its window, by a call of
    /// the same voter for another option: a new vote needs a new key.
    #[error(
        "this idempotency-key was already used by this voter for option {queued:?}; \
         a different vote needs a new key (nothing was queued)"
    )]
    IdempotencyKeyReused {
        /// The option the key's first call queued.
        queued: String,
    },
    /// The queue did not take the vote.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Checks a request against the rules and the poll, and stamps it as a
/// new vote with a fresh id, the current time and the caller's trace context.
pub fn new_vote(
    voter_id: &str,
    option: &str,
    poll: &Poll,
    trace_context: HashMap<String, String>,
) -> Result<NewVote, VoteError> {
    check_voter_id(voter_id)?;
    if option.is_empty() {
        return Err(BallotError::EmptyOption.into());
    }
    if poll.option(option).is_none() {
        return Err(VoteError::UnknownOption {
            option: option.chars().take(40).collect(),
            known: poll.ids(),
        });
    }
    Ok(NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: voter_id.to_owned(),
        option_id: option.to_owned(),
        // Microseconds, as the queue keeps time (a repeat's answer is
        // read back from Redis at that precision).
        cast_at: Utc::now().trunc_subsecs(6),
        trace_context,
        idempotency: None,
    })
}

#[cfg(test)]
mod tests {
    use votemesh::config::PollArgs;

    use super::*;

    #[test]
    fn accepts_a_known_option_and_rejects_the_rest() {
        let poll = PollArgs::default().poll().unwrap();
        let vote = new_vote("v1", "b", &poll, HashMap::new()).unwrap();
        assert_eq!(
            (vote.voter_id.as_str(), vote.option_id.as_str()),
            ("v1", "b")
        );
        assert!(matches!(
            new_vote("v1", "c", &poll, HashMap::new()),
            Err(VoteError::UnknownOption { .. })
        ));
        assert!(matches!(
            new_vote("v1", "", &poll, HashMap::new()),
            Err(VoteError::BadBallot(BallotError::EmptyOption))
        ));
        assert!(matches!(
            new_vote("", "a", &poll, HashMap::new()),
            Err(VoteError::BadBallot(BallotError::EmptyVoterId))
        ));
    }
}
