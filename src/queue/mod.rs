//! The queue between the vote service (producer) and the worker (consumer).
//!
//! A vote is pushed as one JSON message ([`QueuedVote`]) onto the `votes`
//! list. The worker drains it with the reliable-queue pattern: it moves a
//! batch into its own processing list, writes the batch to the database, and
//! only then removes the batch ([`VoteSource::ack_batch`]). A worker that dies
//! in between finds its batch again on restart ([`VoteSource::take_batch`]
//! returns the processing list first), and a batch whose worker never comes
//! back is returned to `votes` by the others ([`VoteSource::reclaim_orphans`]).
//!
//! Three implementations sit behind the same traits:
//! - [`redis::RedisQueue`] / [`redis::RedisWorkerQueue`]: Redis (votes pushed
//!   in batches over one multiplexed connection, the worker through a bb8 pool);
//! - [`redis::RedisQueue`] / [`sharded::ShardedWorkerQueue`]: a queue in
//!   several shards ([`shard`]), on one Redis or a Redis Cluster, whose
//!   workers share the shards through leases (docs/SCALING.md);
//! - [`memory::MemoryQueue`]: in-process, for the all-in-one local run.
//!
//! [`connect`] builds the Redis client of the single-Redis paths (plaintext,
//! or TLS for a `rediss://` URL); [`link`] is the pusher's and the sharded
//! worker's connection, to one Redis or a cluster, and checks the queue's
//! shard count on every new one.
//! [`pusher`] pushes the vote service's votes in batches, numbered by the
//! process (`numbering`) and kept or renumbered by the push script.
//!
//! The queue also stamps each vote with a `sequence`: one stamp for the
//! whole queue (for each shard of a sharded one: a voter is in one shard),
//! rising in the order the queue accepted the votes, so the
//! worker can tell which of two votes of one voter is the later one. It
//! keeps no lasting state per voter: a vote pushed with an idempotency key
//! leaves a marker that expires with its call's repeat window
//! ([`crate::idempotency`]; docs/DESIGN.md, "Ordering and its limit").

pub mod connect;
pub mod link;
pub mod memory;
mod numbering;
pub mod pusher;
pub mod redis;
pub mod shard;
pub mod sharded;

use std::{collections::HashMap, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::{
    ballot::{BallotError, check_option_id, check_voter_id},
    idempotency::Idempotency,
};

/// The Redis list that holds queued votes (newest at the left).
pub const QUEUE_KEY: &str = "votes";
/// The list that receives messages the worker cannot parse.
pub const DEAD_LETTER_KEY: &str = "votes:dead";
/// The last sequence the queue gave out (one number for all voters).
pub const CLOCK_KEY: &str = "votes:clock";
/// Prefix of each worker's processing list (`votes:processing:<worker id>`).
pub const PROCESSING_KEY_PREFIX: &str = "votes:processing:";
/// Prefix of each worker's heartbeat key (`votes:worker:<worker id>`).
pub const HEARTBEAT_KEY_PREFIX: &str = "votes:worker:";
/// Prefix of the marker a vote pushed with an idempotency key leaves for
/// its repeat window (`votes:request:<key>:<voter id>`): the first
/// attempt's sequence, vote id and time. It expires on its own. Markers
/// of keys that tell when they were made are kept in hashes instead
/// ([`MARKER_BUCKET_PREFIX`]).
pub const REQUEST_KEY_PREFIX: &str = "votes:request:";
/// Prefix of the hashes that hold the markers of time-ordered idempotency
/// keys, one hash per [`MARKER_BUCKET_MS`] of the keys' own time
/// (`votes:markers:<ms / 100>`, a field `<key>:<voter id>` per marker).
/// Each hash expires once its last marker's window has passed.
pub const MARKER_BUCKET_PREFIX: &str = "votes:markers:";
/// How much of the keys' time one marker hash covers, in ms: small enough
/// that a hash expiring frees little at once (Redis frees an expired key
/// in its one thread), large enough that a batch's markers mostly share
/// one hash.
pub const MARKER_BUCKET_MS: u64 = 100;

/// Where the push script keeps a vote's idempotency marker.
///
/// Both hold the same text and answer repeats alike; they differ in what
/// a marker costs Redis. A key of its own costs a `SET ... NX GET PX` per
/// vote (a key and an expiry each). A field of a shared hash costs a
/// share of one `HMGET` and one `HSET` per hash per script call, and one
/// expiry per hash: the hash is found again by every attempt of the call
/// because the key itself says which hash (the time it was made), not the
/// clock at the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkerPlace {
    /// A key of its own (`votes:request:<key>:<voter id>`), for keys that
    /// do not tell when they were made (a caller's own, such as `k1`).
    Key(String),
    /// A field of a marker hash, for time-ordered keys (UUID v7, what the
    /// retry layer makes).
    Field {
        /// The hash: `votes:markers:<key's ms / 100>` (with the shard's tag).
        bucket: String,
        /// `<key>:<voter id>`.
        field: String,
    },
}

/// The key of the marker of `voter_id`'s vote pushed with idempotency key
/// `key`. Scoped by voter, so two callers that happen to use one key never
/// take each other's vote for a repeat (the key has no `:`, so the pair is
/// unambiguous).
pub fn request_key(key: &crate::idempotency::IdempotencyKey, voter_id: &str) -> String {
    format!("{REQUEST_KEY_PREFIX}{key}:{voter_id}")
}

/// The key of the processing list of the worker `worker_id`: where its
/// in-flight batch waits until the database committed it.
pub fn processing_key(worker_id: &str) -> String {
    format!("{PROCESSING_KEY_PREFIX}{worker_id}")
}

/// A validated vote before the queue has stamped it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewVote {
    /// Unique id of the vote.
    pub vote_id: Uuid,
    /// Who voted (already validated).
    pub voter_id: String,
    /// The option id voted for (already validated).
    pub option_id: String,
    /// When the vote service accepted the vote.
    pub cast_at: DateTime<Utc>,
    /// W3C trace context of the CastVote call, so the worker's span joins
    /// the vote's trace.
    pub trace_context: HashMap<String, String>,
    /// The call's idempotency key, if it carried one: the queue then takes
    /// the vote only if no vote of this voter was taken with that key
    /// within the window, and answers a repeat as the first attempt was
    /// answered ([`crate::idempotency`]). Not part of the queued message.
    #[serde(skip)]
    pub idempotency: Option<Idempotency>,
}

/// A vote as it travels through the queue: a [`NewVote`] plus its sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedVote {
    /// Order of acceptance by the queue: of two votes of one voter, the one
    /// with the higher sequence was accepted later and wins.
    pub sequence: i64,
    /// Unique id of the vote.
    pub vote_id: Uuid,
    /// Who voted.
    pub voter_id: String,
    /// The option id voted for. Serialized as `option_id`; messages queued
    /// by releases that called it `option` still parse.
    #[serde(alias = "option")]
    pub option_id: String,
    /// When the vote service accepted the vote.
    pub cast_at: DateTime<Utc>,
    /// W3C trace context of the CastVote call (may be empty).
    #[serde(default)]
    pub trace_context: HashMap<String, String>,
}

impl QueuedVote {
    /// Parses one queue message and checks that it is a well-formed vote
    /// (anyone with access to the queue can push a message).
    pub fn parse(message: &str) -> Result<Self, MessageError> {
        let vote: Self = serde_json::from_str(message)?;
        check_voter_id(&vote.voter_id)?;
        check_option_id(&vote.option_id)?;
        Ok(vote)
    }

    /// The vote stamped with `sequence`.
    pub fn stamped(vote: &NewVote, sequence: i64) -> Self {
        Self {
            sequence,
            vote_id: vote.vote_id,
            voter_id: vote.voter_id.clone(),
            option_id: vote.option_id.clone(),
            cast_at: vote.cast_at,
            trace_context: vote.trace_context.clone(),
        }
    }
}

/// The next sequence after `last` (the last one the queue gave out, to any
/// voter), at `now_micros` microseconds since the epoch: above both, so the
/// sequence rises even when the clock steps back, and it restarts from the
/// clock when the queue forgot `last` (a Redis restart without persistence).
pub fn next_sequence(last: Option<i64>, now_micros: i64) -> i64 {
    match last {
        Some(last) if last >= now_micros => last + 1,
        _ => now_micros,
    }
}

/// A queue message that is not a vote.
#[derive(Debug, Error)]
pub enum MessageError {
    /// Not JSON of the vote's shape.
    #[error("not a queued vote: {0}")]
    Json(#[from] serde_json::Error),
    /// A vote whose fields break the rules.
    #[error("malformed vote: {0}")]
    Ballot(#[from] BallotError),
}

/// The queue failed.
#[derive(Clone, Debug, Error)]
pub enum QueueError {
    /// The queue could not be reached or refused the command before doing
    /// anything (down, restarting, loading its data): nothing changed, and
    /// retrying later may succeed.
    #[error("the vote queue is unavailable: {0}")]
    Unavailable(String),
    /// The command was sent but no answer came (a timeout, the connection
    /// dropped mid-call): it may or may not have taken effect. Retrying
    /// later may succeed.
    #[error("the vote queue did not answer in time: {0}")]
    Unconfirmed(String),
    /// The queue is full: Redis refuses writes at its `maxmemory`. Nothing
    /// changed; retrying once the worker has drained the queue succeeds.
    #[error("the vote queue is full: {0}")]
    Full(String),
    /// The queue answered with an error that retrying will not fix.
    #[error("the vote queue failed: {0}")]
    Failed(String),
}

impl QueueError {
    /// Whether retrying later may succeed (the queue was unreachable, slow
    /// or full) rather than something that needs a person.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// Where the vote service puts votes.
pub trait VoteSink: Send + Sync + 'static {
    /// Queues `vote` and returns it as stamped. `Ok` only once the queue
    /// holds the vote; [`QueueError::Full`] when the queue is at its limit
    /// (Redis at `maxmemory`, the in-process queue at its capacity), with
    /// nothing changed.
    fn push(&self, vote: &NewVote) -> impl Future<Output = Result<QueuedVote, QueueError>> + Send;

    /// Answers `Ok` while the queue can take votes.
    fn ping(&self) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Publishes the state of the queue's connection pool for `/metrics`
    /// (the readiness probe calls it). Nothing for a queue without one.
    fn record_pool_metrics(&self) {}
}

/// Where the worker takes votes from: the batch being written, and at
/// most one more taken meanwhile.
pub trait VoteSource: Send + Sync + 'static {
    /// The whole processing list: what is left from an earlier attempt (a
    /// crash, a failed commit) topped up to `max` with the oldest queued
    /// messages (all of it, beyond `max`, when it already holds more),
    /// newest first as the list holds them. Waits up to `wait` when there
    /// is nothing; empty if nothing came.
    fn take_batch(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Moves up to `max` queued messages (the oldest) into the processing
    /// list, beside what is already there, and returns only those, newest
    /// first: the next batch, taken while the one before it is written.
    /// Never waits; empty when nothing is queued.
    fn take_next(&self, max: usize)
    -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Removes exactly the `committed` messages (the batch as
    /// [`VoteSource::take_batch`] or [`VoteSource::take_next`] returned it,
    /// once the database committed it) from the processing list, moving
    /// `dead_letters` (messages of the batch that could not be parsed) to
    /// the dead-letter list, in one atomic step. It acknowledges by
    /// content: the batch is removed at once when it sits whole at the
    /// list's consuming end (its messages compared there one by one), else
    /// message by message; any other message in the processing list (the
    /// next batch, or one a blocking move that landed late moved in) stays
    /// there, and a committed message no longer there (a peer reclaimed
    /// the list meanwhile) is skipped. A dead letter is moved only if it
    /// was removed, so acknowledging twice moves it once. Returns how many
    /// messages it removed.
    fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> impl Future<Output = Result<usize, QueueError>> + Send;

    /// Marks this worker alive and returns to the queue the in-flight
    /// batches of workers that stopped marking themselves alive (never its
    /// own), at the consuming end, oldest first. Returns how many messages
    /// were returned (always 0 for the in-process queue: one worker).
    fn reclaim_orphans(&self) -> impl Future<Output = Result<usize, QueueError>> + Send;

    /// What waits in the queue (not counting in-flight batches).
    fn backlog(&self) -> impl Future<Output = Result<Backlog, QueueError>> + Send;

    /// Hands over what this worker holds of a shared queue (its shards'
    /// leases and its membership), once it has written its last batch, so
    /// the others take it over at once. Nothing to do for a queue that is
    /// not shared out.
    fn leave(&self) -> impl Future<Output = Result<(), QueueError>> + Send {
        async { Ok(()) }
    }

    /// Answers `Ok` while the queue answers.
    fn ping(&self) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Publishes the state of the queue's connection pool for `/metrics`
    /// (the readiness probe calls it). Nothing for a queue without one.
    fn record_pool_metrics(&self) {}
}

/// What waits in the queue: how much, and since when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Votes waiting (not counting in-flight batches).
    pub depth: u64,
    /// When the vote service accepted the oldest waiting vote; `None` when
    /// nothing waits (or the oldest message is not a vote).
    pub oldest_cast_at: Option<DateTime<Utc>>,
}

impl Backlog {
    /// The backlog of `depth` messages whose oldest (next to be taken) is
    /// `oldest`.
    pub fn of(depth: u64, oldest: Option<&str>) -> Self {
        Self {
            depth,
            oldest_cast_at: oldest.and_then(cast_at_of),
        }
    }

    /// How long the oldest waiting vote has waited at `now`: zero when
    /// nothing waits (or clocks disagree).
    pub fn oldest_age(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_cast_at
            .and_then(|cast_at| (now - cast_at).to_std().ok())
            .unwrap_or_default()
    }

    /// Sets the `votemesh_queue_depth` and
    /// `votemesh_queue_oldest_age_seconds` gauges.
    pub fn record(&self) {
        metrics::gauge!("votemesh_queue_depth").set(self.depth as f64);
        metrics::gauge!("votemesh_queue_oldest_age_seconds")
            .set(self.oldest_age(Utc::now()).as_secs_f64());
    }
}

/// When the vote in `message` was accepted, if the message is a vote (read
/// without checking the rest: only the age is wanted).
fn cast_at_of(message: &str) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct CastAt {
        cast_at: DateTime<Utc>,
    }
    serde_json::from_str::<CastAt>(message)
        .ok()
        .map(|vote| vote.cast_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_is_later_than_the_last_and_follows_the_clock() {
        assert_eq!(next_sequence(None, 1_000), 1_000);
        assert_eq!(next_sequence(Some(10), 1_000), 1_000);
        assert_eq!(next_sequence(Some(1_000), 1_000), 1_001);
        assert_eq!(next_sequence(Some(5_000), 1_000), 5_001);
    }

    #[test]
    fn backlog_age_is_that_of_the_oldest_vote() {
        let now = Utc::now();
        let vote = NewVote {
            vote_id: Uuid::new_v4(),
            voter_id: "v1".into(),
            option_id: "a".into(),
            cast_at: now - chrono::Duration::seconds(90),
            trace_context: HashMap::new(),
            idempotency: None,
        };
        let message = serde_json::to_string(&QueuedVote::stamped(&vote, 1)).unwrap();
        let backlog = Backlog::of(3, Some(&message));
        assert_eq!(backlog.depth, 3);
        assert_eq!(backlog.oldest_age(now), Duration::from_secs(90));
        assert_eq!(Backlog::of(0, None).oldest_age(now), Duration::ZERO);
        assert_eq!(
            Backlog::of(1, Some("not json")).oldest_age(now),
            Duration::ZERO
        );
        // A clock behind the vote's: no negative age.
        assert_eq!(
            backlog.oldest_age(now - chrono::Duration::seconds(100)),
            Duration::ZERO
        );
    }

    #[test]
    fn stamped_vote_round_trips_through_json() {
        let vote = NewVote {
            vote_id: Uuid::new_v4(),
            voter_id: "v1".into(),
            option_id: "a".into(),
            cast_at: Utc::now(),
            trace_context: HashMap::new(),
            idempotency: None,
        };
        let queued = QueuedVote::stamped(&vote, 7);
        let json = serde_json::to_string(&queued).unwrap();
        assert_eq!(QueuedVote::parse(&json).unwrap(), queued);
        assert!(QueuedVote::parse("{\"voter_id\":1}").is_err());
        assert!(json.contains("\"option_id\":\"a\""), "{json}");
        let queued_by_an_older_release = json.replace("\"option_id\"", "\"option\"");
        assert_eq!(
            QueuedVote::parse(&queued_by_an_older_release).unwrap(),
            queued
        );
        let bad_voter = json.replace("\"v1\"", "\"\"");
        assert!(matches!(
            QueuedVote::parse(&bad_voter),
            Err(MessageError::Ballot(BallotError::EmptyVoterId))
        ));
    }
}
