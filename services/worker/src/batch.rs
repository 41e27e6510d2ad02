//! Pure batch logic, no I/O: which messages are votes, and which vote of
//! each voter is the newest.

use std::collections::BTreeMap;

use votemesh::queue::{MessageError, QueuedVote};

/// A batch split into votes and messages that are not votes.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    /// The well-formed votes.
    pub votes: Vec<QueuedVote>,
    /// Raw messages that are not well-formed votes, with the reason.
    pub malformed: Vec<(String, MessageError)>,
}

/// Parses every message of a batch.
pub fn parse(messages: &[String]) -> ParsedBatch {
    let mut parsed = ParsedBatch::default();
    for message in messages {
        match QueuedVote::parse(message) {
            Ok(vote) => parsed.votes.push(vote),
            Err(error) => parsed.malformed.push((message.clone(), error)),
        }
    }
    parsed
}

/// Each voter's newest vote (highest sequence) in the batch, by voter id
/// (sorted, so rows are locked in one order by every worker).
pub fn newest_per_voter(votes: &[QueuedVote]) -> BTreeMap<&str, &QueuedVote> {
    let mut newest: BTreeMap<&str, &QueuedVote> = BTreeMap::new();
    for vote in votes {
        newest
            .entry(vote.voter_id.as_str())
            .and_modify(|kept| {
                if vote.sequence > kept.sequence {
                    *kept = vote;
                }
            })
            .or_insert(vote);
    }
    newest
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn vote(voter: &str, option: &str, sequence: i64) -> QueuedVote {
        QueuedVote {
            sequence,
            vote_id: Uuid::new_v4(),
            voter_id: voter.into(),
            option_id: option.into(),
            cast_at: Utc::now(),
            trace_context: HashMap::new(),
        }
    }

    #[test]
    fn keeps_the_highest_sequence_per_voter_whatever_the_order() {
        let votes = vec![vote("v1", "b", 5), vote("v2", "a", 1), vote("v1", "a", 3)];
        let newest = newest_per_voter(&votes);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest["v1"].option_id, "b");
        assert_eq!(newest["v2"].option_id, "a");
        assert_eq!(newest.keys().copied().collect::<Vec<_>>(), ["v1", "v2"]);
    }

    #[test]
    fn separates_malformed_messages() {
        let good = serde_json::to_string(&vote("v1", "a", 1)).unwrap();
        let parsed = parse(&[good, "not json".into(), "{\"sequence\":1}".into()]);
        assert_eq!(parsed.votes.len(), 1);
        assert_eq!(parsed.malformed.len(), 2);
        assert_eq!(parsed.malformed[0].0, "not json");
    }
}
