//! What makes a vote well-formed, checked where votes enter (the vote
//! service) and again where they leave the queue (the worker), since anyone
//! with access to Redis can push a message.

use thiserror::Error;

/// Longest option id: 1 to this many ASCII letters, digits, `-` or `_`.
pub const MAX_OPTION_ID_LEN: usize = 32;

/// Longest voter id, in characters.
pub const MAX_VOTER_ID_CHARS: usize = 128;

/// Why a vote is not well-formed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BallotError {
    /// The voter id is empty.
    #[error("voter_id is empty; it must be 1 to {MAX_VOTER_ID_CHARS} printable characters")]
    EmptyVoterId,
    /// The voter id is too long.
    #[error("voter_id has {0} characters; at most {MAX_VOTER_ID_CHARS} are allowed")]
    VoterIdTooLong(usize),
    /// The voter id holds a control character.
    #[error("voter_id holds a non-printable character at position {0}")]
    VoterIdNotPrintable(usize),
    /// The option id is empty.
    #[error("option is empty; it must be an option id such as \"a\"")]
    EmptyOption,
    /// The option id cannot be an option id of any poll.
    #[error("option {0:?} is not a valid option id")]
    MalformedOption(String),
}

/// Checks a voter id: 1 to [`MAX_VOTER_ID_CHARS`] characters, none of them
/// a control character.
pub fn check_voter_id(voter_id: &str) -> Result<(), BallotError> {
    if voter_id.is_empty() {
        return Err(BallotError::EmptyVoterId);
    }
    if let Some(position) = voter_id.chars().position(char::is_control) {
        return Err(BallotError::VoterIdNotPrintable(position));
    }
    let chars = voter_id.chars().count();
    if chars > MAX_VOTER_ID_CHARS {
        return Err(BallotError::VoterIdTooLong(chars));
    }
    Ok(())
}

/// Checks that `option_id` has the shape of an option id: 1 to
/// [`MAX_OPTION_ID_LEN`] ASCII letters, digits, `-` or `_`. The one
/// definition of that rule: the poll's configuration (the `poll` module) and
/// messages leaving the queue are held to it. Whether the poll has the
/// option is the vote service's question.
pub fn check_option_id(option_id: &str) -> Result<(), BallotError> {
    if option_id.is_empty() {
        return Err(BallotError::EmptyOption);
    }
    let ok = option_id.len() <= MAX_OPTION_ID_LEN
        && option_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BallotError::MalformedOption(
            option_id.chars().take(40).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_ids() {
        assert_eq!(check_voter_id("v1"), Ok(()));
        assert_eq!(check_voter_id("élodie 🐱"), Ok(()));
        assert_eq!(check_voter_id(&"x".repeat(128)), Ok(()));
        assert_eq!(check_voter_id(&"é".repeat(128)), Ok(()));
        assert_eq!(check_voter_id(""), Err(BallotError::EmptyVoterId));
        assert_eq!(
            check_voter_id(&"x".repeat(129)),
            Err(BallotError::VoterIdTooLong(129))
        );
        assert_eq!(
            check_voter_id("ab\ncd"),
            Err(BallotError::VoterIdNotPrintable(2))
        );
        assert_eq!(
            check_voter_id("\u{7f}"),
            Err(BallotError::VoterIdNotPrintable(0))
        );
    }

    #[test]
    fn option_ids() {
        assert_eq!(check_option_id("a"), Ok(()));
        assert_eq!(check_option_id(""), Err(BallotError::EmptyOption));
        assert!(check_option_id("a b").is_err());
        assert!(check_option_id(&"a".repeat(33)).is_err());
    }
}
