//! One contract, two queues: the promises of `VoteSink` + `VoteSource`
//! (`src/queue/mod.rs`), each written once as a generic scenario and run
//! against the Redis queue (a real redis-server from the harness) and the
//! in-process queue alike.
//!
//! ```text
//! scenario(&impl Queue) ─┬─► OnRedis:   RedisQueue + RedisWorkerQueue over redis-server
//!                        ├─► OnRedis, its clock ahead: every push renumbered by the script
//!                        └─► InProcess: MemoryQueue
//! ```
//!
//! The Redis queue runs each scenario twice: as it starts, where the push
//! script keeps the numbers the vote service gave its votes, and with the
//! queue's clock set ahead of every clock, so that the script renumbers
//! every call and rebuilds its messages and markers
//! (`src/queue/pusher.rs`, `PUSH_SCRIPT`).
//!
//! A scenario sees a queue through [`Queue`]: the two traits, plus the few
//! things a producer or Redis can do that the traits do not offer (push a
//! message that is not a vote, read the dead letters, a late move). What
//! only Redis can do (a real abandoned BLMOVE, a kill -9 of the worker,
//! `maxmemory`) is tested in `services/worker/tests/drain.rs` and
//! `services/vote/tests/cast_vote.rs`; the in-process queue's capacity in
//! `src/queue/memory.rs`.

use std::{collections::HashMap, time::Duration};

use bb8_redis::redis::{self, AsyncCommands};
use chrono::{SubsecRound, Utc};
use uuid::Uuid;
use votemesh::idempotency::{Idempotency, IdempotencyKey};
use votemesh::queue::{
    Backlog, CLOCK_KEY, DEAD_LETTER_KEY, MarkerPlace, NewVote, QUEUE_KEY, QueuedVote, VoteSink,
    VoteSource, memory::MemoryQueue, processing_key, redis::RedisQueue, redis::RedisWorkerQueue,
    shard::Shards,
};
use votemesh_testing::RedisServer;

/// How long a scenario waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(30);

/// A queue under test, as a scenario sees it.
trait Queue {
    /// The producer side.
    type Sink: VoteSink;
    /// One worker's side.
    type Source: VoteSource;

    /// Where the vote service pushes.
    fn sink(&self) -> &Self::Sink;

    /// The worker `worker_id`'s side of the queue.
    fn worker(&self, worker_id: &str) -> Self::Source;

    /// A second worker, `worker_id`, with its own processing list, if the
    /// queue has more than one (the in-process queue has one worker).
    fn peer(&self, worker_id: &str) -> Option<Self::Source>;

    /// Queues `message` as a producer that does not check it would.
    async fn push_raw(&self, message: &str);

    /// The dead-letter list, oldest first.
    async fn dead_letters(&self) -> Vec<String>;

    /// Moves the oldest queued message into the processing list of
    /// `worker_id` outside any take, as a blocking move whose client gave
    /// up lands when a vote arrives.
    async fn land_late(&self, worker_id: &str);
}

/// The Redis queue over its own redis-server.
struct OnRedis {
    server: RedisServer,
    queue: RedisQueue,
}

impl OnRedis {
    async fn start() -> Self {
        let server = RedisServer::start().await.unwrap();
        let queue = RedisQueue::new(&server.url()).unwrap();
        Self { server, queue }
    }

    /// A Redis queue whose clock (the last sequence given out) is set a
    /// minute ahead of the time: no number the vote service proposes can
    /// stand, and every push is renumbered by the script.
    async fn start_with_its_clock_ahead() -> Self {
        let on_redis = Self::start().await;
        let ahead = (Utc::now() + chrono::Duration::minutes(1)).timestamp_micros();
        let _: () = on_redis
            .connection()
            .await
            .set(CLOCK_KEY, ahead)
            .await
            .unwrap();
        on_redis
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.url().expose())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Queue for OnRedis {
    type Sink = RedisQueue;
    type Source = RedisWorkerQueue;

    fn sink(&self) -> &RedisQueue {
        &self.queue
    }

    fn worker(&self, worker_id: &str) -> RedisWorkerQueue {
        self.queue.for_worker(worker_id)
    }

    fn peer(&self, worker_id: &str) -> Option<RedisWorkerQueue> {
        Some(self.queue.for_worker(worker_id))
    }

    async fn push_raw(&self, message: &str) {
        let _: i64 = self
            .connection()
            .await
            .lpush(QUEUE_KEY, message)
            .await
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<String> {
        let mut newest_first: Vec<String> = self
            .connection()
            .await
            .lrange(DEAD_LETTER_KEY, 0, -1)
            .await
            .unwrap();
        newest_first.reverse();
        newest_first
    }

    async fn land_late(&self, worker_id: &str) {
        let moved: Option<String> = self
            .connection()
            .await
            .lmove(
                QUEUE_KEY,
                processing_key(worker_id),
                redis::Direction::Right,
                redis::Direction::Left,
            )
            .await
            .unwrap();
        assert!(moved.is_some(), "a queued message to land late");
    }
}

/// The in-process queue.
struct InProcess {
    queue: MemoryQueue,
}

impl Queue for InProcess {
    type Sink = MemoryQueue;
    type Source = MemoryQueue;

    fn sink(&self) -> &MemoryQueue {
        &self.queue
    }

    fn worker(&self, _worker_id: &str) -> MemoryQueue {
        self.queue.clone()
    }

    fn peer(&self, _worker_id: &str) -> Option<MemoryQueue> {
        None
    }

    async fn push_raw(&self, message: &str) {
        self.queue.push_raw(message).unwrap();
    }

    async fn dead_letters(&self) -> Vec<String> {
        self.queue.dead_letters()
    }

    async fn land_late(&self, _worker_id: &str) {
        // No blocking move can land late here (a take waits on a
        // notification and moves under the lock when it returns): the
        // nearest thing is a message moved in beside the batch.
        assert_eq!(self.queue.take_next(1).await.unwrap().len(), 1);
    }
}

/// Runs each scenario against both queues: `redis_queue::<scenario>`,
/// `redis_queue_renumbered::<scenario>` and `memory_queue::<scenario>`.
macro_rules! contract {
    ($($scenario:ident),+ $(,)?) => {
        mod redis_queue {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::OnRedis::start().await).await;
                }
            )+
        }
        mod redis_queue_renumbered {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::OnRedis::start_with_its_clock_ahead().await).await;
                }
            )+
        }
        mod memory_queue {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let queue = super::InProcess {
                        queue: votemesh::queue::memory::MemoryQueue::new(),
                    };
                    super::$scenario(&queue).await;
                }
            )+
        }
    };
}

contract!(
    votes_are_stamped_in_order_and_taken_oldest_first_newest_first_in_a_batch,
    take_batch_returns_the_whole_processing_list_until_it_is_acknowledged,
    acknowledgement_removes_the_batch_and_leaves_the_next_one,
    acknowledgement_is_by_content_and_skips_what_is_no_longer_there,
    a_late_move_beside_the_batch_survives_its_acknowledgement,
    dead_letters_are_moved_once_and_only_with_their_acknowledgement,
    a_reclaim_never_takes_the_own_batch_and_orphans_come_back_oldest_first,
    an_empty_queue_gives_empty_batches_and_a_waiting_worker_gets_the_next_vote,
    a_repeat_with_a_key_of_its_own_is_answered_as_the_first_and_not_queued_again,
    a_repeat_with_a_time_ordered_key_is_answered_as_the_first_and_not_queued_again,
    votes_pushed_together_with_keys_of_their_own_are_queued_as_each_was_answered,
    votes_pushed_together_with_time_ordered_keys_are_queued_as_each_was_answered,
    votes_pushed_together_with_markers_in_several_places_and_windows_are_queued_as_each_was_answered,
);

/// How a scenario's calls name their idempotency keys: the marker of a
/// time-ordered key is kept in a shared hash in Redis, any other key's
/// in a key of its own (`votemesh::queue::MarkerPlace`).
#[derive(Clone, Copy)]
enum Keys {
    /// The label itself (`call-1`): a key of its own.
    OfTheirOwn,
    /// A UUID v7 made now, the same for the same label within a run.
    TimeOrdered,
}

impl Keys {
    fn key(self, label: &str) -> String {
        match self {
            Keys::OfTheirOwn => label.to_owned(),
            Keys::TimeOrdered => {
                static MINTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
                let minted = *MINTED.get_or_init(|| Utc::now().timestamp_millis() as u64);
                let mut random = [0; 10];
                let digest = crc32fast::hash(label.as_bytes()).to_be_bytes();
                random[..4].copy_from_slice(&digest);
                time_ordered_key(minted, random)
            }
        }
    }
}

/// A UUID v7 key made at `millis` (ms since the epoch) with these random
/// bits.
fn time_ordered_key(millis: u64, random: [u8; 10]) -> String {
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    uuid.simple().to_string()
}

async fn a_repeat_with_a_key_of_its_own_is_answered_as_the_first_and_not_queued_again(
    queue: &impl Queue,
) {
    a_repeat_of_a_keyed_push_is_answered_as_the_first_and_not_queued_again(queue, Keys::OfTheirOwn)
        .await;
}

async fn a_repeat_with_a_time_ordered_key_is_answered_as_the_first_and_not_queued_again(
    queue: &impl Queue,
) {
    a_repeat_of_a_keyed_push_is_answered_as_the_first_and_not_queued_again(
        queue,
        Keys::TimeOrdered,
    )
    .await;
}

async fn votes_pushed_together_with_keys_of_their_own_are_queued_as_each_was_answered(
    queue: &impl Queue,
) {
    votes_pushed_together_are_queued_as_each_was_answered(queue, Keys::OfTheirOwn).await;
}

async fn votes_pushed_together_with_time_ordered_keys_are_queued_as_each_was_answered(
    queue: &impl Queue,
) {
    votes_pushed_together_are_queued_as_each_was_answered(queue, Keys::TimeOrdered).await;
}

/// A push repeated with the same idempotency key (a retried call whose
/// first attempt was queued) is not queued again and is answered as the
/// first was, even after a later vote of the same voter; the same key from
/// another voter, and the key once its window has passed, are votes of
/// their own.
async fn a_repeat_of_a_keyed_push_is_answered_as_the_first_and_not_queued_again(
    queue: &impl Queue,
    keys: Keys,
) {
    let keyed_vote = |voter: &str, label: &str, window| keyed_vote(voter, &keys.key(label), window);
    let window = Duration::from_secs(30);
    let first = queue
        .sink()
        .push(&keyed_vote("v1", "call-1", window))
        .await
        .unwrap();
    let later = queue
        .sink()
        .push(&keyed_vote("v1", "call-2", window))
        .await
        .unwrap();
    let repeat = queue
        .sink()
        .push(&keyed_vote("v1", "call-1", window))
        .await
        .unwrap();
    assert_eq!(repeat, first, "a repeat is answered as the first push");
    assert!(
        later.sequence > first.sequence,
        "the later vote stays later"
    );
    let other_voter = queue
        .sink()
        .push(&keyed_vote("v2", "call-1", window))
        .await
        .unwrap();
    assert_ne!(other_voter.vote_id, first.vote_id);

    // A window that has passed: the key is forgotten (the wait is the
    // behaviour under test, not a guess at timing).
    let short = Duration::from_millis(50);
    let brief = queue
        .sink()
        .push(&keyed_vote("v3", "call-3", short))
        .await
        .unwrap();
    tokio::time::sleep(short * 4).await;
    let after = queue
        .sink()
        .push(&keyed_vote("v3", "call-3", short))
        .await
        .unwrap();
    assert_ne!(after.vote_id, brief.vote_id, "queued anew once forgotten");

    // The key reused for another option: answered with the first call's
    // vote (its option included), not queued.
    let reused = NewVote {
        option_id: "b".into(),
        ..keyed_vote("v1", "call-1", window)
    };
    assert_eq!(queue.sink().push(&reused).await.unwrap(), first);

    // Two attempts of one call at once (they may share a script call):
    // one is queued, both are answered with it.
    let (attempt, again) = (
        keyed_vote("v4", "call-4", window),
        keyed_vote("v4", "call-4", window),
    );
    let (one, two) = tokio::join!(queue.sink().push(&attempt), queue.sink().push(&again));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one, two);

    let worker = queue.worker("w");
    let batch = worker.take_batch(10, Duration::ZERO).await.unwrap();
    let mut taken = parsed(&batch);
    taken.reverse();
    assert_eq!(
        taken,
        vec![first, later, other_voter, brief, after, one],
        "each vote queued once, in order"
    );
}

/// A vote of `voter`, cast `seconds_ago`.
fn new_vote(voter: &str, seconds_ago: i64) -> NewVote {
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: voter.into(),
        option_id: "a".into(),
        cast_at: Utc::now() - chrono::Duration::seconds(seconds_ago),
        trace_context: HashMap::from([("traceparent".to_owned(), "00-x-y-01".to_owned())]),
        idempotency: None,
    }
}

/// A vote of `voter` cast now (to the microsecond, as the queues keep
/// time), pushed by a call with idempotency key `key` remembered for
/// `window`.
fn keyed_vote(voter: &str, key: &str, window: Duration) -> NewVote {
    NewVote {
        cast_at: Utc::now().trunc_subsecs(6),
        idempotency: Some(Idempotency {
            key: IdempotencyKey::parse(key).unwrap(),
            window,
        }),
        ..new_vote(voter, 0)
    }
}

/// Votes pushed at once (so the Redis queue's pusher sends them in one
/// script call): plain votes, keyed votes, and the repeat of a keyed vote
/// among them. Each queued vote is in the queue exactly as its push was
/// answered (its sequence included), every sequence differs, and the repeat
/// is answered as its first attempt and not queued again.
async fn votes_pushed_together_are_queued_as_each_was_answered(queue: &impl Queue, keys: Keys) {
    let keyed_vote = |voter: &str, label: &str, window| keyed_vote(voter, &keys.key(label), window);
    let window = Duration::from_secs(30);
    let first = queue
        .sink()
        .push(&keyed_vote("k0", "call-0", window))
        .await
        .unwrap();
    let votes: Vec<NewVote> = (0..40)
        .map(|n| match n % 4 {
            0 => keyed_vote(&format!("k{n}"), &format!("call-{n}"), window),
            _ => new_vote(&format!("v{n}"), 40 - n),
        })
        .collect();
    let answers = futures_util::future::join_all(votes.iter().map(|vote| queue.sink().push(vote)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    assert_eq!(answers[0], first, "the repeat is answered as the first");
    let worker = queue.worker("w");
    let mut queued = parsed(&worker.take_batch(1000, Duration::ZERO).await.unwrap());
    queued.sort_by_key(|vote| vote.sequence);
    let mut expected = answers[1..].to_vec();
    expected.insert(0, first);
    expected.sort_by_key(|vote| vote.sequence);
    assert_eq!(queued, expected, "each vote queued as it was answered");
    expected.dedup_by_key(|vote| vote.sequence);
    assert_eq!(expected.len(), 40, "one sequence per queued vote");
}

/// Votes pushed at once whose markers lie in several places: two marker
/// hashes (keys made a second apart), keys of their own, and no key, with
/// three windows between them; repeats of calls queued before, in each
/// place, and two attempts of one new call among them. Each is answered
/// as its own first attempt was, or queued once as it was answered, in
/// the order pushed. (On Redis they share one script call, which is told
/// each vote's place and window apart from its message.)
async fn votes_pushed_together_with_markers_in_several_places_and_windows_are_queued_as_each_was_answered(
    queue: &impl Queue,
) {
    let now = Utc::now().timestamp_millis() as u64;
    let earlier = |label: u8| time_ordered_key(now - 1_000, [label; 10]);
    let later = |label: u8| time_ordered_key(now, [label; 10]);
    let (short, middle, long) = (
        Duration::from_secs(10),
        Duration::from_secs(20),
        Duration::from_secs(30),
    );
    let mut firsts = Vec::new();
    for (voter, key, window) in [
        ("r1", earlier(1), long),
        ("r2", later(2), short),
        ("r3", "own-3".to_owned(), middle),
    ] {
        let vote = keyed_vote(voter, &key, window);
        firsts.push(queue.sink().push(&vote).await.unwrap());
    }
    let together = [
        keyed_vote("r1", &earlier(1), middle),
        keyed_vote("n1", &earlier(11), middle),
        new_vote("p1", 0),
        keyed_vote("r3", "own-3", long),
        keyed_vote("n2", &later(12), short),
        keyed_vote("r2", &later(2), long),
        keyed_vote("n3", "own-13", long),
        keyed_vote("n4", &earlier(14), short),
        keyed_vote("n4", &earlier(14), long),
        keyed_vote("n5", &later(15), middle),
    ];
    let answers =
        futures_util::future::join_all(together.iter().map(|vote| queue.sink().push(vote)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
    assert_eq!(answers[0], firsts[0], "a repeat in the earlier hash");
    assert_eq!(answers[3], firsts[2], "a repeat with a key of its own");
    assert_eq!(answers[5], firsts[1], "a repeat in the later hash");
    assert_eq!(answers[7], answers[8], "two attempts of one call: one vote");
    let new_votes = [1, 2, 4, 6, 7, 9];
    for (position, vote) in new_votes.iter().map(|&i| (i, &together[i])) {
        assert_eq!(
            answers[position].vote_id, vote.vote_id,
            "vote {position} is queued as itself"
        );
    }
    let worker = queue.worker("w");
    let mut queued = parsed(&worker.take_batch(1000, Duration::ZERO).await.unwrap());
    queued.reverse();
    let mut expected = firsts;
    expected.extend(new_votes.iter().map(|&i| answers[i].clone()));
    assert_eq!(
        queued, expected,
        "each vote queued once, as answered, in order"
    );
}

/// Pushes `count` votes, the first cast earliest, and returns them as the
/// queue stamped them.
async fn push_votes(queue: &impl Queue, count: usize) -> Vec<QueuedVote> {
    let mut pushed = Vec::new();
    for n in 0..count {
        let seconds_ago = i64::try_from(100 - n).unwrap();
        let vote = new_vote(&format!("v{n}"), seconds_ago);
        pushed.push(queue.sink().push(&vote).await.unwrap());
    }
    pushed
}

/// The votes in `batch`, in its order.
fn parsed(batch: &[String]) -> Vec<QueuedVote> {
    batch
        .iter()
        .map(|message| QueuedVote::parse(message).unwrap())
        .collect()
}

/// `votes[range]` newest first, as a take returns them.
fn newest_first(votes: &[QueuedVote], range: std::ops::Range<usize>) -> Vec<QueuedVote> {
    votes[range].iter().rev().cloned().collect()
}

fn messages(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// Ordering and backlog: sequences rise in the order the queue accepted the
/// votes, each vote comes out as it was stamped, the oldest are taken
/// first, a batch comes newest first (as the processing list holds it), and
/// the backlog counts what waits, dated by the oldest.
async fn votes_are_stamped_in_order_and_taken_oldest_first_newest_first_in_a_batch(
    queue: &impl Queue,
) {
    let worker = queue.worker("w");
    assert_eq!(worker.backlog().await.unwrap(), Backlog::default());
    queue.sink().ping().await.unwrap();
    worker.ping().await.unwrap();

    let pushed = push_votes(queue, 5).await;
    assert!(
        pushed
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence),
        "sequences rise in push order: {pushed:?}"
    );
    let backlog = worker.backlog().await.unwrap();
    assert_eq!(backlog.depth, 5);
    assert_eq!(backlog.oldest_cast_at, Some(pushed[0].cast_at));

    let batch = worker.take_batch(2, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&batch), newest_first(&pushed, 0..2));
    let backlog = worker.backlog().await.unwrap();
    assert_eq!(backlog.depth, 3, "in-flight votes are not in the backlog");
    assert_eq!(backlog.oldest_cast_at, Some(pushed[2].cast_at));

    let next = worker.take_next(2).await.unwrap();
    assert_eq!(parsed(&next), newest_first(&pushed, 2..4));
    let last = worker.take_next(10).await.unwrap();
    assert_eq!(parsed(&last), newest_first(&pushed, 4..5));
    assert!(worker.take_next(10).await.unwrap().is_empty());
    assert_eq!(worker.backlog().await.unwrap(), Backlog::default());
}

/// A take returns the whole processing list: a batch not acknowledged (a
/// crash, a failed commit) comes back whole, topped up to `max` but never
/// cut to it, with the next batch taken beside it.
async fn take_batch_returns_the_whole_processing_list_until_it_is_acknowledged(queue: &impl Queue) {
    let worker = queue.worker("w");
    let pushed = push_votes(queue, 6).await;
    let batch = worker.take_batch(3, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&batch), newest_first(&pushed, 0..3));
    assert_eq!(
        worker.take_batch(3, Duration::ZERO).await.unwrap(),
        batch,
        "taken again, the same batch"
    );
    assert_eq!(
        worker.take_batch(1, Duration::ZERO).await.unwrap(),
        batch,
        "all of it, beyond max"
    );

    let next = worker.take_next(1).await.unwrap();
    assert_eq!(parsed(&next), newest_first(&pushed, 3..4));
    assert_eq!(
        parsed(&worker.take_batch(3, Duration::ZERO).await.unwrap()),
        newest_first(&pushed, 0..4),
        "the next batch is part of the processing list"
    );
    assert_eq!(
        parsed(&worker.take_batch(5, Duration::ZERO).await.unwrap()),
        newest_first(&pushed, 0..5),
        "topped up to max with the oldest queued"
    );
    assert_eq!(worker.backlog().await.unwrap().depth, 1);
}

/// The acknowledgement removes the batch it was given and nothing else:
/// the next batch, taken meanwhile, stays for the next take; acknowledging
/// again removes nothing; the order the batch is given in does not matter.
async fn acknowledgement_removes_the_batch_and_leaves_the_next_one(queue: &impl Queue) {
    let worker = queue.worker("w");
    let pushed = push_votes(queue, 4).await;
    let batch = worker.take_batch(2, Duration::ZERO).await.unwrap();
    let next = worker.take_next(2).await.unwrap();
    assert_eq!(worker.ack_batch(&batch, &[]).await.unwrap(), 2);
    assert_eq!(worker.ack_batch(&batch, &[]).await.unwrap(), 0);
    let retaken = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(retaken, next, "the next batch, alone and whole");
    assert_eq!(parsed(&retaken), newest_first(&pushed, 2..4));

    let oldest_first: Vec<String> = next.iter().rev().cloned().collect();
    assert_eq!(worker.ack_batch(&oldest_first, &[]).await.unwrap(), 2);
    assert!(
        worker
            .take_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(worker.ack_batch(&[], &[]).await.unwrap(), 0);
}

/// The acknowledgement compares content: a message from the middle of the
/// list goes alone, a message no longer there is skipped, and of two equal
/// messages one committed removes one.
async fn acknowledgement_is_by_content_and_skips_what_is_no_longer_there(queue: &impl Queue) {
    let worker = queue.worker("w");
    for message in ["m0", "m1", "m2", "twin", "twin"] {
        queue.push_raw(message).await;
    }
    let batch = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch, messages(&["twin", "twin", "m2", "m1", "m0"]));

    assert_eq!(worker.ack_batch(&messages(&["m1"]), &[]).await.unwrap(), 1);
    assert_eq!(
        worker.take_batch(10, Duration::ZERO).await.unwrap(),
        messages(&["twin", "twin", "m2", "m0"])
    );
    assert_eq!(
        worker
            .ack_batch(&messages(&["m9", "m0", "m1"]), &[])
            .await
            .unwrap(),
        1,
        "m0 only: m9 never was there, m1 is gone"
    );
    assert_eq!(
        worker.ack_batch(&messages(&["twin"]), &[]).await.unwrap(),
        1
    );
    assert_eq!(
        worker.take_batch(10, Duration::ZERO).await.unwrap(),
        messages(&["twin", "m2"])
    );
    assert_eq!(
        worker
            .ack_batch(&messages(&["twin", "m2", "twin"]), &[])
            .await
            .unwrap(),
        2
    );
    assert!(
        worker
            .take_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A message that lands in the processing list while the batch is written
/// (a blocking move whose client gave up) is not part of the batch: its
/// acknowledgement leaves it, and the next take returns it.
async fn a_late_move_beside_the_batch_survives_its_acknowledgement(queue: &impl Queue) {
    let worker = queue.worker("w");
    let pushed = push_votes(queue, 3).await;
    let batch = worker.take_batch(2, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&batch), newest_first(&pushed, 0..2));
    queue.land_late("w").await;
    assert_eq!(worker.ack_batch(&batch, &[]).await.unwrap(), 2);
    let retaken = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&retaken), newest_first(&pushed, 2..3));
    assert_eq!(worker.ack_batch(&retaken, &[]).await.unwrap(), 1);
    assert_eq!(worker.backlog().await.unwrap(), Backlog::default());
}

/// Dead letters leave with their batch's acknowledgement, once: not before
/// it, not again when it is repeated, and not when the message was already
/// gone.
async fn dead_letters_are_moved_once_and_only_with_their_acknowledgement(queue: &impl Queue) {
    let worker = queue.worker("w");
    push_votes(queue, 1).await;
    queue.push_raw("not a vote").await;
    push_votes(queue, 1).await;
    let batch = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch.len(), 3);
    assert!(queue.dead_letters().await.is_empty());

    let dead = messages(&["not a vote"]);
    assert_eq!(worker.ack_batch(&batch, &dead).await.unwrap(), 3);
    assert_eq!(queue.dead_letters().await, dead);
    assert_eq!(worker.ack_batch(&batch, &dead).await.unwrap(), 0);
    assert_eq!(queue.dead_letters().await, dead, "moved once");

    // Acknowledged once as committed, then named a dead letter: it is no
    // longer there, so it is not moved.
    queue.push_raw("{\"voter_id\":1}").await;
    let batch = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(worker.ack_batch(&batch, &[]).await.unwrap(), 1);
    assert_eq!(worker.ack_batch(&batch, &batch).await.unwrap(), 0);
    assert_eq!(queue.dead_letters().await, dead);
}

/// A worker's reclaim marks it alive and never takes back its own batch;
/// the batch of a worker that died (where the queue has several) returns
/// to the consuming end, oldest first, so whichever the queue, the next
/// batches come in the order the votes were queued, none lost or doubled.
async fn a_reclaim_never_takes_the_own_batch_and_orphans_come_back_oldest_first(
    queue: &impl Queue,
) {
    let worker = queue.worker("live");
    let pushed = push_votes(queue, 6).await;
    let batch = worker.take_batch(2, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&batch), newest_first(&pushed, 0..2));
    let orphaned = match queue.peer("gone") {
        Some(gone) => {
            // It takes the next two and dies without a heartbeat.
            let taken = gone.take_batch(2, Duration::ZERO).await.unwrap();
            assert_eq!(parsed(&taken), newest_first(&pushed, 2..4));
            2
        }
        None => 0,
    };
    assert_eq!(worker.reclaim_orphans().await.unwrap(), orphaned);
    assert_eq!(worker.reclaim_orphans().await.unwrap(), 0);
    assert_eq!(
        worker.take_batch(2, Duration::ZERO).await.unwrap(),
        batch,
        "the own batch stays"
    );
    assert_eq!(worker.ack_batch(&batch, &[]).await.unwrap(), 2);
    assert_eq!(worker.backlog().await.unwrap().depth, 4);
    let second = worker.take_batch(2, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&second), newest_first(&pushed, 2..4));
    assert_eq!(worker.ack_batch(&second, &[]).await.unwrap(), 2);
    let third = worker.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(parsed(&third), newest_first(&pushed, 4..6));
}

/// Nothing queued: takes answer empty at once, or after waiting; a worker
/// that keeps waiting gets a vote pushed meanwhile.
async fn an_empty_queue_gives_empty_batches_and_a_waiting_worker_gets_the_next_vote(
    queue: &impl Queue,
) {
    let worker = queue.worker("w");
    assert!(
        worker
            .take_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(worker.take_next(10).await.unwrap().is_empty());
    assert!(
        worker
            .take_batch(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(worker.reclaim_orphans().await.unwrap(), 0);

    let waiting = async {
        tokio::time::timeout(WAIT, async {
            loop {
                let batch = worker
                    .take_batch(10, Duration::from_millis(200))
                    .await
                    .unwrap();
                if !batch.is_empty() {
                    return batch;
                }
            }
        })
        .await
        .expect("the waiting worker got the vote")
    };
    let (batch, pushed) = tokio::join!(waiting, push_votes(queue, 1));
    assert_eq!(parsed(&batch), pushed);
}

/// Redis alone: a hash of markers lives as long as its longest-lived
/// marker (a shorter window pushed in the same call or later does not cut
/// it, and its own marker still goes with its window), and not longer:
/// a hash whose markers' windows have all passed is gone, so markers leave
/// nothing behind.
#[tokio::test]
async fn a_marker_hash_lives_as_long_as_its_longest_window_and_then_goes() {
    let queue = OnRedis::start().await;
    let mut redis = queue.connection().await;
    let hash_of = |key: &str| match Shards::ONE
        .of("v1")
        .marker_place(&IdempotencyKey::parse(key).unwrap(), "v1")
    {
        MarkerPlace::Field { bucket, .. } => bucket,
        MarkerPlace::Key(key) => panic!("{key} is not in a hash"),
    };
    let minted_at = |millis: u64, label: u8| time_ordered_key(millis, [label; 10]);
    let now = Utc::now().timestamp_millis() as u64;

    let (long, short) = (minted_at(now, 1), minted_at(now, 2));
    assert_eq!(hash_of(&long), hash_of(&short), "one hash for both");
    // Pushed together (one script call on Redis), the shorter first.
    let (short_vote, long_vote) = (
        keyed_vote("v2", &short, Duration::from_millis(50)),
        keyed_vote("v1", &long, Duration::from_secs(30)),
    );
    let (first_short, _) = tokio::join!(
        queue.sink().push(&short_vote),
        queue.sink().push(&long_vote)
    );
    let first_short = first_short.unwrap();
    let ttl: i64 = redis.pttl(hash_of(&long)).await.unwrap();
    assert!(
        (29_000..=30_000).contains(&ttl),
        "the longest window: {ttl} ms"
    );
    // A shorter window pushed later does not cut it either.
    queue
        .sink()
        .push(&keyed_vote(
            "v4",
            &minted_at(now, 4),
            Duration::from_millis(50),
        ))
        .await
        .unwrap();
    let ttl: i64 = redis.pttl(hash_of(&long)).await.unwrap();
    assert!(
        (29_000..=30_000).contains(&ttl),
        "still the longest window: {ttl} ms"
    );
    // Each marker keeps its own window: the short one is forgotten.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = queue.sink().push(&short_vote).await.unwrap();
    assert_ne!(
        again.sequence, first_short.sequence,
        "queued anew once forgotten"
    );

    // Another hash (keys made a second later), short windows only.
    let brief = minted_at(now + 1_000, 3);
    let window = Duration::from_millis(200);
    queue
        .sink()
        .push(&keyed_vote("v3", &brief, window))
        .await
        .unwrap();
    let ttl: i64 = redis.pttl(hash_of(&brief)).await.unwrap();
    assert!((1..=200).contains(&ttl), "its one window: {ttl} ms");
    tokio::time::sleep(window * 3).await;
    let left: bool = redis.exists(hash_of(&brief)).await.unwrap();
    assert!(!left, "the hash is gone with its last window");
}
