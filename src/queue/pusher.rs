//! The producer's side of the Redis queue: votes that arrive together share
//! round trips.
//!
//! ```text
//! CastVote ─┐
//! CastVote ─┼─► channel ─► pusher task ─► one push script call per batch ─► Redis
//! CastVote ─┘        (takes what waits,      (MAX_PUSHES_IN_FLIGHT: one call
//!                     up to MAX_PUSH_BATCH)    on the wire at a time)
//! ```
//!
//! One task per process owns one link to Redis ([`super::link`]: a
//! multiplexed connection to one Redis, or a cluster connection). It takes
//! the first waiting vote and whatever else is waiting (up to
//! [`MAX_PUSH_BATCH`]), numbers them (`super::numbering`) and pushes
//! them in one script call per shard they fall in (one call on an unsharded queue; with
//! `REDIS_REPLICA_ACKS`, each call pipelined with its `WAIT`), and answers
//! each caller once Redis answered. A lone vote goes out at once;
//! under load, votes gather while the call before is on the wire, so the
//! cost per vote falls as load rises. Nothing is acknowledged before Redis
//! accepted it.
//!
//! A single Redis's connection speaks RESP3 so the client reports a
//! disconnection as it happens (a cluster connection reconnects by itself): a batch is then sent on a new connection, and if none can be
//! opened the votes are refused as [`QueueError::Unavailable`] (nothing was
//! sent), together with every vote that gathered while the attempt waited.
//! So when Redis does not answer at all (a host gone, not a port refused),
//! no vote waits longer than one connection attempt
//! ([`super::connect::CONNECTION_TIMEOUT`]) before its caller hears UNAVAILABLE,
//! however many arrive meanwhile. A vote whose caller has already gone (its
//! deadline passed, the client hung up) is dropped before the push. A batch
//! that was sent but not answered (within [`super::connect::RESPONSE_TIMEOUT`]) is
//! [`QueueError::Unconfirmed`] for each of its votes; the connection is
//! replaced if it failed, and kept if the answer was only late (the call
//! may still run, as it would have on a pooled connection).
//!
//! The task belongs to its [`Pusher`], which holds its `JoinHandle` and the
//! only strong sender of its channel: dropping the `Pusher` ends the task
//! (after it answered the votes in flight), and [`Pusher::is_running`] tells
//! its owner ([`super::redis::RedisQueue`]) when it ended otherwise (a
//! panic). Callers push through [`PushHandle`]s, which do not keep it alive.
//!
//! Metrics: `votemesh_vote_push_batch_size` (votes per script call),
//! `votemesh_vote_push_abandoned_total` (votes whose caller left first)
//! and `votemesh_vote_push_renumbered_total` (calls whose numbers the
//! script replaced, [`PUSH_SCRIPT`]).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bb8_redis::redis::{self, ErrorKind, RedisError, Script, ServerErrorKind};
use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt, future::join_all, stream::FuturesUnordered};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use uuid::Uuid;

use super::{
    MarkerPlace, QueueError,
    connect::classify,
    link::{Link, PushConnection, Target},
    numbering::Numbering,
    shard::Shard,
};
use crate::{config::QueueLayout, supervise::why_ended};

/// Most votes stamped and pushed by one script call.
pub const MAX_PUSH_BATCH: usize = 256;
/// Script calls on the wire at once; further votes wait and gather. One:
/// a call costs Redis about as much as a few votes do, so the votes that
/// arrive while a call is out are worth sending together (group commit).
/// On loopback this left throughput as it was with 4 and carried 2-3x the
/// votes per call (docs/BENCHMARKS.md, "Redis per queued vote").
pub const MAX_PUSHES_IN_FLIGHT: usize = 1;
/// Votes waiting for the pusher at most; beyond it, callers wait.
const WAITING_CAPACITY: usize = 8192;

/// Pushes votes numbered with rising sequences, atomically. The vote
/// service numbers a call's votes itself (`first`, `first + 1`, ... in the
/// call's order, [`Numbering`]) and builds each one's message and marker
/// whole; the script keeps those numbers if they are above `last`, the one
/// number the queue keeps (`votes:clock`, the last sequence given out),
/// and within [`CLOCK_SKEW`] of the Redis server's clock. Otherwise
/// (another replica numbered past them, or the vote service's clock is off)
/// it numbers the call itself from `max(last + 1, now)` and rebuilds the
/// messages and markers with those numbers. Either way sequences rise in
/// the order Redis runs the script, whichever vote service replica sent
/// it, even if a clock steps back; no sequence is more than `CLOCK_SKEW`
/// (and a call's votes) ahead of Redis' clock; and if Redis lost
/// `votes:clock` (restarted without its AOF), they carry on from its clock
/// plus `CLOCK_SKEW`, above those given out before. A vote takes the
/// number of its position in the call even when it is a repeat (which
/// leaves its number unused).
///
/// A vote sent with an idempotency key has a marker ([`MarkerPlace`]): if
/// it is there, an earlier attempt of the same call was pushed, and the
/// vote is not pushed again; the marker's text (that attempt's sequence,
/// vote id, time and option) is its answer. Otherwise the vote is pushed
/// and the marker written for the vote's repeat window, so it leaves
/// nothing behind. A marker is kept in one of two places:
///
/// - **a field of a marker hash** (time-ordered keys, what the retry layer
///   makes): each hash's fields are read in one `HMGET` and written in one
///   `HSET` per call, whatever the number of votes. A field's value starts
///   with its own expiry (`<ms since the epoch> <marker>`): a field past it
///   is no marker, so a key is forgotten after its window even while its
///   hash lives on. The hash expires when its last field does (its expiry
///   only ever moved later, read with `PEXPIRETIME`, Redis 7.0). The vote
///   service dates the expiry from its first sequence, so a window is kept
///   to within `CLOCK_SKEW` of Redis' clock.
/// - **a key of its own** (any other key): one `SET ... NX GET PX` both
///   checks and sets it, with its own expiry (`NX` with `GET` needs Redis
///   7.0, which votemesh requires anyway).
///
/// What a call costs Redis is mostly the call itself (the script's entry,
/// `TIME`, the clock's `GET` and `SET`, the wake-up and the reply), then
/// the work per vote, which the script keeps to the least it can be
/// (docs/BENCHMARKS.md, "Redis per queued vote"). Every argument and every
/// string the script builds is a Lua string, which this Redis hashes byte
/// by byte, and every number it reads from an argument is parsed. So a
/// vote's arguments are its message, and, when it has a marker, the
/// marker's field and value, all built by the vote service: when its
/// numbers stand, the script builds no string per vote, it passes the
/// arguments on. What the script needs to know about each vote (where its
/// marker is, how long it lives) comes as numbers packed in one argument
/// for the whole call, read with one `string.byte`. The whole batch goes
/// out in one `LPUSH`, a hash's markers are read in one `HMGET` straight
/// from the arguments and written in one `HSET`, and the answer is the
/// first sequence (the others follow from it) and the repeats alone. The
/// same script serves one shard of a sharded queue: every key it touches
/// is the shard's.
///
/// KEYS: queue, clock, the `h` marker hashes, then the marker key of each
/// vote that has one of its own, in the votes' order.
///
/// ARGV, in this order:
/// 1. the layout: four bytes per vote, in the votes' order, two numbers
///    of 16 bits (big-endian): the vote's marker place (0: none; 1 to `h`:
///    a field of that hash; [`OWN_KEY`]: a key of its own) and its
///    lifetime (1 to `l`, in the list below; 0 without a marker);
/// 2. `first`, the vote service's sequence for the call's first vote;
/// 3. `l`, then `h`;
/// 4. the `l` lifetimes, in ms;
/// 5. for each hash, the number of its fields in this call;
/// 6. for each hash, until when (ms since the epoch) its fields of this
///    call are kept, dated from `first`;
/// 7. the fields of hash 1, in the votes' order, then those of hash 2, ...;
/// 8. the marker of each vote with one, in the votes' order: `<expiry>
///    <sequence> <stamp>` in a hash, `<sequence> <stamp>` as a key of its
///    own, where the stamp is `<vote id> <µs since the epoch> <option id>`;
/// 9. every vote's message, `{"sequence":<its sequence>,` and the rest of
///    its JSON, in order.
///
/// Returns the first sequence, then for each repeat its position (from 1)
/// and its marker (`<sequence> <stamp>`). The vote at position `i` took
/// the sequence `first + i - 1`.
const PUSH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local last = tonumber(redis.call('GET', KEYS[2]))
local layout = {string.byte(ARGV[1], 1, -1)}
local votes = #layout / 4
local first = tonumber(ARGV[2])
local lifetimes = tonumber(ARGV[3])
local hashes = tonumber(ARGV[4])
-- The vote service's numbers stand if they follow the last one given out
-- and keep to this clock (within 50 ms); if not, the script renumbers.
local renumber = not (last and first > last and first >= now - 50000
  and first + votes - 1 <= now + 50000)
if renumber then
  if last then first = math.max(last + 1, now) else first = now + 50000 end
end
-- Each marker hash's fields are read at once, straight from the arguments.
local arg = 5 + lifetimes + 2 * hashes
local found, first_field, next_field, written, writes, keep_until = {}, {}, {}, {}, {}, {}
for h = 1, hashes do
  local count = tonumber(ARGV[4 + lifetimes + h])
  found[h] = redis.call('HMGET', KEYS[2 + h], unpack(ARGV, arg, arg + count - 1))
  first_field[h], next_field[h], written[h], writes[h] = arg, arg, {}, {}
  keep_until[h] = renumber and 0 or tonumber(ARGV[4 + lifetimes + hashes + h])
  arg = arg + count
end
local next_marker = arg
local before = #ARGV - votes
local expiry, expiry_text = {}, {}
local own = 0
local messages = {}
local answers = {renumber and string.format('%d', first) or ARGV[2]}
for i = 1, votes do
  local place = layout[4 * i - 3] * 256 + layout[4 * i - 2]
  local sequence = renumber and string.format('%d', first + i - 1)
  local prior = false
  if place > 0 then
    local marker = ARGV[next_marker]
    next_marker = next_marker + 1
    local life = layout[4 * i - 1] * 256 + layout[4 * i]
    if place == 65535 then
      -- One command sets the marker if it is absent and returns it if not.
      own = own + 1
      if renumber then
        marker = sequence .. string.sub(marker, (string.find(marker, ' ', 1, true)))
      end
      prior = redis.call('SET', KEYS[2 + hashes + own], marker, 'NX', 'GET', 'PX', ARGV[4 + life])
    else
      local at = next_field[place]
      next_field[place] = at + 1
      local field = ARGV[at]
      -- An earlier vote of this call may have written it.
      local value = written[place][field] or found[place][at - first_field[place] + 1]
      if value then
        local gap = string.find(value, ' ', 1, true)
        if gap and tonumber(string.sub(value, 1, gap - 1)) > now_ms then
          prior = string.sub(value, gap + 1)
        end
      end
      if not prior then
        if renumber then
          if not expiry[life] then
            expiry[life] = now_ms + tonumber(ARGV[4 + life])
            expiry_text[life] = string.format('%d', expiry[life])
          end
          local stamp = string.find(marker, ' ', string.find(marker, ' ', 1, true) + 1, true)
          marker = expiry_text[life] .. ' ' .. sequence .. string.sub(marker, stamp)
          if expiry[life] > keep_until[place] then keep_until[place] = expiry[life] end
        end
        written[place][field] = marker
        local w = writes[place]
        w[#w + 1] = field
        w[#w + 1] = marker
      end
    end
  end
  if prior then
    answers[#answers + 1] = string.format('%d', i)
    answers[#answers + 1] = prior
  else
    local message = ARGV[before + i]
    if renumber then
      message = '{"sequence":' .. sequence .. string.sub(message, (string.find(message, ',', 1, true)))
    end
    messages[#messages + 1] = message
  end
end
if #messages > 0 then
  redis.call('LPUSH', KEYS[1], unpack(messages))
  redis.call('SET', KEYS[2], string.format('%d', first + votes - 1))
end
for h = 1, hashes do
  if #writes[h] > 0 then
    redis.call('HSET', KEYS[2 + h], unpack(writes[h]))
    if redis.call('PEXPIRETIME', KEYS[2 + h]) < keep_until[h] then
      redis.call('PEXPIREAT', KEYS[2 + h], string.format('%d', keep_until[h]))
    end
  end
end
return answers
"#;

/// How far the vote service's sequences may be from Redis' clock and
/// still stand (the script compares with the same number of µs, 50000):
/// well above what the clocks of hosts kept by NTP and a call's way to
/// Redis add up to, and small next to a repeat window's margin of 1 s
/// ([`crate::idempotency`]), which the markers' expiries may move by it.
pub const CLOCK_SKEW: Duration = Duration::from_millis(50);

/// The layout's place of a vote whose marker is a key of its own (the
/// script compares with the same number, 65535).
const OWN_KEY: u16 = u16::MAX;

// One LPUSH takes the whole batch, one HMGET and one HSET a hash's
// markers (two values each), and the layout's four bytes a vote are read
// with one `string.byte`: Lua keeps each of them on its stack, whose
// limit is about 8,000 values. A hash's number and a lifetime's fit the
// layout's 16 bits, with OWN_KEY to spare.
const _: () = assert!(MAX_PUSH_BATCH <= 1000, "a batch must fit one unpack");
const _: () = assert!(
    MAX_PUSH_BATCH < OWN_KEY as usize,
    "a place must fit 16 bits"
);

/// One vote waiting to be pushed, and where its answer goes.
struct Waiting {
    json: String,
    /// The shard of the vote's voter: where it is pushed.
    shard: Shard,
    marker: Option<Marker>,
    answer: oneshot::Sender<Result<Pushed, QueueError>>,
}

/// The marker a vote with an idempotency key leaves in Redis for its
/// repeat window ([`crate::idempotency`]).
#[derive(Clone, Debug)]
pub struct Marker {
    /// Where it is kept ([`super::shard::Shard::marker_place`]).
    pub place: MarkerPlace,
    /// How long it is kept.
    pub lifetime: Duration,
    /// What a repeat is answered with besides the sequence: `<vote id>
    /// <cast_at in µs since the epoch> <option id>` ([`Marker::stamp`]).
    pub stamp: String,
}

/// What Redis did with a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, with this sequence.
    Queued {
        /// The sequence Redis gave it.
        sequence: i64,
    },
    /// Not queued again: an earlier attempt of the same call was, and this
    /// is how it was stamped.
    Repeat(FirstAttempt),
}

/// The stamp of a call's first queued attempt, read from its marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstAttempt {
    /// Its sequence.
    pub sequence: i64,
    /// Its vote id.
    pub vote_id: Uuid,
    /// When the vote service accepted it.
    pub cast_at: DateTime<Utc>,
    /// The option it was for (a caller that reuses a key for another
    /// vote gets this back, not its new option).
    pub option_id: String,
}

impl Marker {
    /// The stamp of a vote: what its repeats are answered with.
    pub fn stamp(vote_id: Uuid, cast_at: DateTime<Utc>, option_id: &str) -> String {
        format!("{vote_id} {} {option_id}", cast_at.timestamp_micros())
    }
}

impl Pushed {
    /// The sequence the script's reply gives the call's first vote: the
    /// one the call proposed, or the script's own when it renumbered.
    fn first_number(reply: &[String]) -> Option<i64> {
        reply.first().and_then(|first| first.parse().ok())
    }

    /// Reads the script's reply for a batch of `votes` votes: the first
    /// sequence, then a position and a marker per repeat (see
    /// [`PUSH_SCRIPT`]). The vote at position `i` took the sequence
    /// `first + i - 1`, a repeat too (its number is left unused). A reply
    /// it cannot read is [`QueueError::Unconfirmed`] for every vote, and a
    /// marker it cannot read for its vote: the script ran, and they may
    /// have been queued.
    fn read_reply(votes: usize, reply: &[String]) -> Vec<Result<Self, QueueError>> {
        let unreadable = || {
            let error = QueueError::Unconfirmed(format!("bad push reply {reply:?} from Redis"));
            vec![Err(error); votes]
        };
        let Some(first) = Self::first_number(reply) else {
            return unreadable();
        };
        let mut repeats = reply[1..].chunks_exact(2);
        let mut next_repeat = repeats.next();
        let mut answers = Vec::with_capacity(votes);
        for (position, sequence) in (1..=votes).zip(first..) {
            match next_repeat {
                Some([at, marker]) if at.parse() == Ok(position) => {
                    answers.push(Self::read_marker(marker));
                    next_repeat = repeats.next();
                }
                _ => answers.push(Ok(Self::Queued { sequence })),
            }
        }
        if next_repeat.is_some() || !repeats.remainder().is_empty() {
            return unreadable();
        }
        answers
    }

    /// Reads a repeat's marker (`<sequence> <vote id> <µs> <option id>`).
    fn read_marker(marker: &str) -> Result<Self, QueueError> {
        let bad = || QueueError::Unconfirmed(format!("bad push answer {marker:?} from Redis"));
        let mut parts = marker.split(' ');
        let sequence = parts
            .next()
            .and_then(|text| text.parse().ok())
            .ok_or_else(bad)?;
        let vote_id = parts
            .next()
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(bad)?;
        let cast_at = parts
            .next()
            .and_then(|micros| micros.parse().ok())
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(bad)?;
        let option_id = parts.next().ok_or_else(bad)?.to_owned();
        Ok(Self::Repeat(FirstAttempt {
            sequence,
            vote_id,
            cast_at,
            option_id,
        }))
    }
}

/// The pusher task and its owner (mini-redis's `DbDropGuard` pattern): the
/// one value that started the task, holds its [`JoinHandle`] to see it end,
/// and ends it when dropped (the channel closes: the task answers the votes
/// in flight, then returns).
///
/// While a `Pusher` lives its channel is open, so its task has no reason
/// to end: if it did (a panic), [`Pusher::is_running`] says so and pushes
/// through its [`PushHandle`]s are refused as [`QueueError::Unavailable`]
/// (nothing was sent). Noticing that and starting a new pusher is the
/// owner's job ([`super::redis::RedisQueue`] does it in its readiness
/// check).
#[derive(Debug)]
pub struct Pusher {
    /// The one strong sender: the channel closes, and the task ends, when
    /// the `Pusher` is dropped.
    waiting: mpsc::Sender<Waiting>,
    task: JoinHandle<()>,
}

/// Where votes are handed to a [`Pusher`]'s task; cheap to clone. It does
/// not keep the task alive: only its [`Pusher`] does.
#[derive(Clone, Debug)]
pub struct PushHandle {
    waiting: mpsc::WeakSender<Waiting>,
}

impl Pusher {
    /// Starts the pusher task for `target` (connecting lazily; a single
    /// node's client is built anew for each connection, with the TLS
    /// identity current then, so a rotated certificate reaches the
    /// pusher's next connection), pushing votes into the shards of
    /// `layout` and waiting for its replica acknowledgements. A target
    /// that cannot make a client is refused here. Must be called inside a
    /// tokio runtime.
    pub fn spawn(target: Target, layout: QueueLayout) -> Result<Self, QueueError> {
        target.check()?;
        metrics::counter!("votemesh_vote_push_abandoned_total").increment(0);
        metrics::counter!("votemesh_vote_push_renumbered_total").increment(0);
        let (waiting, queue) = mpsc::channel(WAITING_CAPACITY);
        let task = tokio::spawn(run(target, layout, queue));
        Ok(Self { waiting, task })
    }

    /// A handle to push votes through.
    pub fn handle(&self) -> PushHandle {
        PushHandle {
            waiting: self.waiting.downgrade(),
        }
    }

    /// Whether the task still runs (it ends only if it panicked, or was
    /// aborted, while this `Pusher` lives).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// How the task ended ([`crate::supervise::why_ended`]), or `None`
    /// while it runs.
    pub fn ended(self) -> Option<String> {
        if self.is_running() {
            return None;
        }
        self.task.now_or_never().map(why_ended)
    }

    /// Ends the task at once, as a panic in it would. For tests of what
    /// notices a dead pusher; nothing in the product calls it.
    #[doc(hidden)]
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl PushHandle {
    /// Pushes one vote (its JSON object without the sequence; with `marker`, only
    /// if no earlier attempt of its call was pushed) and returns what Redis
    /// did with it, once Redis answered.
    pub async fn push(
        &self,
        json: String,
        shard: Shard,
        marker: Option<Marker>,
    ) -> Result<Pushed, QueueError> {
        let stopped = || QueueError::Unavailable("the vote pusher has stopped".into());
        if !json.starts_with('{') {
            return Err(QueueError::Failed(format!(
                "a queued vote must be a JSON object, not {json:?}"
            )));
        }
        let (answer, answered) = oneshot::channel();
        let waiting = self.waiting.upgrade().ok_or_else(stopped)?;
        waiting
            .send(Waiting {
                json,
                shard,
                marker,
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        drop(waiting);
        answered.await.unwrap_or_else(|_| {
            Err(QueueError::Unconfirmed(
                "the vote pusher stopped before Redis answered".into(),
            ))
        })
    }
}

/// The pusher task: gathers waiting votes into batches and keeps up to
/// [`MAX_PUSHES_IN_FLIGHT`] batches on the wire (a batch is one script
/// call per shard it holds votes of).
async fn run(target: Target, layout: QueueLayout, mut queue: mpsc::Receiver<Waiting>) {
    let script = Script::new(PUSH_SCRIPT);
    let numbering = Arc::new(Numbering::default());
    let mut link: Option<Link> = None;
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(lost) = in_flight.next(), if !in_flight.is_empty() => {
                if lost {
                    link = None;
                }
            }
            first = queue.recv(), if in_flight.len() < MAX_PUSHES_IN_FLIGHT => {
                let Some(first) = first else { break };
                let batch = gather(first, &mut queue, MAX_PUSH_BATCH);
                if batch.is_empty() {
                    continue;
                }
                if !link.as_ref().is_some_and(Link::is_open) {
                    link = match Link::open(&target, layout.shards).await {
                        Ok(opened) => {
                            // Loaded once per link (on every primary of a
                            // cluster), not found missing by the first push.
                            if let Err(error) = script.load_async(&mut opened.connection()).await {
                                tracing::debug!(%error, "could not load the push script ahead");
                            }
                            Some(opened)
                        }
                        Err(error) => {
                            // Those who waited through the attempt would
                            // only wait through the next one too.
                            answer_all(batch, &error);
                            answer_all(gather_all(&mut queue), &error);
                            continue;
                        }
                    };
                }
                if let Some(open) = &link {
                    metrics::histogram!("votemesh_vote_push_batch_size").record(batch.len() as f64);
                    in_flight.push(push_batch(
                        script.clone(),
                        numbering.clone(),
                        open.connection(),
                        layout.replica_acks,
                        batch,
                    ));
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// `first` and whatever else waits, up to `max` votes, leaving out votes
/// whose caller has already gone.
fn gather(first: Waiting, queue: &mut mpsc::Receiver<Waiting>, max: usize) -> Vec<Waiting> {
    let mut batch = Vec::with_capacity(max.min(queue.len() + 1));
    let mut next = Some(first);
    while let Some(waiting) = next {
        if waiting.answer.is_closed() {
            metrics::counter!("votemesh_vote_push_abandoned_total").increment(1);
        } else {
            batch.push(waiting);
        }
        if batch.len() == max {
            break;
        }
        next = queue.try_recv().ok();
    }
    batch
}

/// Every vote waiting now (not those that arrive meanwhile: under a flood
/// this would never end).
fn gather_all(queue: &mut mpsc::Receiver<Waiting>) -> Vec<Waiting> {
    let waiting_now = queue.len();
    std::iter::from_fn(|| queue.try_recv().ok())
        .take(waiting_now)
        .collect()
}

/// Numbers and pushes `batch`, one script call per shard, all at once, and
/// answers each vote. Returns whether the connection is to be replaced
/// (it failed under a call, which may or may not have run).
async fn push_batch(
    script: Script,
    numbering: Arc<Numbering>,
    connection: PushConnection,
    replica_acks: u8,
    batch: Vec<Waiting>,
) -> bool {
    let mut by_shard: BTreeMap<u16, Vec<Waiting>> = BTreeMap::new();
    for waiting in batch {
        by_shard
            .entry(waiting.shard.index())
            .or_default()
            .push(waiting);
    }
    let calls = by_shard
        .into_values()
        .map(|votes| push_shard(&script, &numbering, connection.clone(), replica_acks, votes));
    join_all(calls).await.into_iter().any(|lost| lost)
}

/// Longest a push waits for its replicas' acknowledgement (`WAIT`): well
/// inside the response timeout, so a missing replica reads as "not
/// confirmed", not as a dead connection.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(200);

/// Numbers the `votes` of one shard ([`Numbering`]) and pushes them in one
/// script call (with
/// `WAIT` for `replica_acks` replicas in the same round trip when it is
/// above 0) and answers each vote. Returns whether the connection is to be
/// replaced.
async fn push_shard(
    script: &Script,
    numbering: &Numbering,
    connection: PushConnection,
    replica_acks: u8,
    votes: Vec<Waiting>,
) -> bool {
    let first = numbering.propose(votes.len());
    push_numbered(script, numbering, connection, replica_acks, votes, first).await
}

/// [`push_shard`] with the votes numbered from `first`.
async fn push_numbered(
    script: &Script,
    numbering: &Numbering,
    mut connection: PushConnection,
    replica_acks: u8,
    votes: Vec<Waiting>,
    first: i64,
) -> bool {
    let Some(shard) = votes.first().map(|waiting| waiting.shard.clone()) else {
        return false;
    };
    let arguments = ScriptArguments::of(&votes, first);
    let mut invocation = script.prepare_invoke();
    invocation.key(shard.queue_key()).key(shard.clock_key());
    for key in arguments.hashes.iter().chain(&arguments.own_keys) {
        invocation.key(*key);
    }
    invocation
        .arg(arguments.layout)
        .arg(arguments.first)
        .arg(arguments.lifetimes.len())
        .arg(arguments.hashes.len());
    for lifetime in &arguments.lifetimes {
        invocation.arg(*lifetime);
    }
    for fields in &arguments.fields {
        invocation.arg(fields.len());
    }
    for keep_until in &arguments.keep_until {
        invocation.arg(*keep_until);
    }
    for field in arguments.fields.iter().flatten() {
        invocation.arg(*field);
    }
    for text in arguments.markers.iter().chain(&arguments.messages) {
        invocation.arg(text);
    }
    let outcome = if replica_acks == 0 {
        invocation.invoke_async(&mut connection).await
    } else {
        match push_and_wait(&invocation, &mut connection, replica_acks).await {
            Ok((_, acknowledged)) if acknowledged < u64::from(replica_acks) => {
                metrics::counter!("votemesh_vote_push_unreplicated_total").increment(1);
                let error = QueueError::Unconfirmed(format!(
                    "Redis took the vote, but {acknowledged} of {replica_acks} replicas \
                     confirmed it within {REPLICA_ACK_TIMEOUT:?}: it would be lost if its \
                     primary failed now"
                ));
                answer_all(votes, &error);
                return false;
            }
            outcome => outcome.map(|(reply, _)| reply),
        }
    };
    // A timeout leaves the connection as it is: the call may still run
    // (Redis is slow, not gone), and its late answer is discarded.
    let reply: Vec<String> = match outcome {
        Ok(reply) => reply,
        Err(error) => {
            let lost = !error.is_timeout();
            let error = classify(error);
            let lost = lost && matches!(error, QueueError::Unconfirmed(_));
            answer_all(votes, &error);
            return lost;
        }
    };
    let answers = Pushed::read_reply(votes.len(), &reply);
    if let Some(numbered) = Pushed::first_number(&reply)
        && numbered != first
    {
        metrics::counter!("votemesh_vote_push_renumbered_total").increment(1);
        numbering.heard(numbered, votes.len());
    }
    for (waiting, answer) in votes.into_iter().zip(answers) {
        let _ = waiting.answer.send(answer);
    }
    false
}

/// What [`PUSH_SCRIPT`] is told about one shard's votes, gathered in one
/// pass over them, numbered from `first`.
#[derive(Debug, Default, PartialEq, Eq)]
struct ScriptArguments<'a> {
    /// Each vote's marker place and lifetime, as two big-endian `u16`s.
    layout: Vec<u8>,
    /// The sequence of the first vote; the others follow in order.
    first: i64,
    /// The marker hashes, in the order first named.
    hashes: Vec<&'a str>,
    /// Each hash's fields, in the votes' order.
    fields: Vec<Vec<&'a str>>,
    /// Until when each hash's markers of this call are kept (ms since the
    /// epoch).
    keep_until: Vec<i64>,
    /// The markers' distinct lifetimes in ms, in the order first named.
    lifetimes: Vec<u64>,
    /// The marker keys of the votes with one of their own, in order.
    own_keys: Vec<&'a str>,
    /// The markers of the votes with one, in order: `<expiry> <sequence>
    /// <stamp>` in a hash, `<sequence> <stamp>` as a key of its own.
    markers: Vec<String>,
    /// Each vote's message: its JSON with its sequence first.
    messages: Vec<String>,
}

impl<'a> ScriptArguments<'a> {
    fn of(votes: &'a [Waiting], first: i64) -> Self {
        let mut arguments = Self {
            layout: Vec::with_capacity(4 * votes.len()),
            first,
            markers: Vec::with_capacity(votes.len()),
            messages: Vec::with_capacity(votes.len()),
            ..Self::default()
        };
        // A marker's expiry is dated from the call's first sequence (µs),
        // as the script would date it from its clock.
        let first_ms = first.div_euclid(1000);
        for (waiting, sequence) in votes.iter().zip(first..) {
            // PushHandle::push checked that the JSON opens with a brace.
            let rest = waiting.json.get(1..).unwrap_or_default();
            arguments
                .messages
                .push(format!("{{\"sequence\":{sequence},{rest}"));
            let Some(marker) = &waiting.marker else {
                arguments.layout.extend([0; 4]);
                continue;
            };
            let lifetime = u64::try_from(marker.lifetime.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let place = match &marker.place {
                MarkerPlace::Key(key) => {
                    arguments.own_keys.push(key);
                    arguments
                        .markers
                        .push(format!("{sequence} {}", marker.stamp));
                    OWN_KEY
                }
                MarkerPlace::Field { bucket, field } => {
                    let hash = number_of(&mut arguments.hashes, bucket.as_str());
                    if hash == arguments.fields.len() {
                        arguments.fields.push(Vec::new());
                        arguments.keep_until.push(0);
                    }
                    arguments.fields[hash].push(field);
                    let expiry =
                        first_ms.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
                    arguments.keep_until[hash] = arguments.keep_until[hash].max(expiry);
                    arguments
                        .markers
                        .push(format!("{expiry} {sequence} {}", marker.stamp));
                    place_number(hash)
                }
            };
            let lifetime = place_number(number_of(&mut arguments.lifetimes, lifetime));
            arguments.layout.extend(place.to_be_bytes());
            arguments.layout.extend(lifetime.to_be_bytes());
        }
        arguments
    }
}

/// The index of `value` in `list`, added at its end if it is not there.
fn number_of<T: PartialEq>(list: &mut Vec<T>, value: T) -> usize {
    list.iter()
        .position(|known| *known == value)
        .unwrap_or_else(|| {
            list.push(value);
            list.len() - 1
        })
}

/// The layout's number (from 1) of the entry at `index`: at most one per
/// vote of a batch, so below [`OWN_KEY`].
fn place_number(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(OWN_KEY - 1)
}

/// Runs the push script and `WAIT` in one pipeline, so both go to the
/// shard's primary, on one connection, in one round trip (the wait covers
/// this push), loading the script first if that primary does not have it
/// (a replica just promoted). Returns the script's reply and how many
/// replicas confirmed within [`REPLICA_ACK_TIMEOUT`].
async fn push_and_wait(
    invocation: &redis::ScriptInvocation<'_>,
    connection: &mut PushConnection,
    replica_acks: u8,
) -> Result<(Vec<String>, u64), RedisError> {
    let mut pipeline = redis::pipe();
    pipeline
        .invoke_script(invocation)
        .cmd("WAIT")
        .arg(replica_acks)
        .arg(REPLICA_ACK_TIMEOUT.as_millis() as u64);
    match pipeline.query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            // NOSCRIPT: the script did not run, nothing was pushed.
            invocation.load_async(connection).await?;
            pipeline.query_async(connection).await
        }
        outcome => outcome,
    }
}

fn answer_all(batch: Vec<Waiting>, error: &QueueError) {
    for waiting in batch {
        let _ = waiting.answer.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use bb8_redis::redis::AsyncCommands;

    use super::*;

    fn reply(words: &[&str]) -> Vec<String> {
        words.iter().map(|&word| word.to_owned()).collect()
    }

    #[test]
    fn each_vote_takes_the_sequence_of_its_position_and_repeats_answer_their_marker() {
        let first = "7f1b1a4e-0b5e-4a59-9d4e-1c2b3a4d5e6f";
        let marker = format!("90 {first} 1733500000000000 b");
        let answers = Pushed::read_reply(4, &reply(&["100", "2", &marker]));
        let answers: Vec<Pushed> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers[0], Pushed::Queued { sequence: 100 });
        assert_eq!(
            answers[1],
            Pushed::Repeat(FirstAttempt {
                sequence: 90,
                vote_id: Uuid::parse_str(first).unwrap(),
                cast_at: DateTime::from_timestamp_micros(1_733_500_000_000_000).unwrap(),
                option_id: "b".into(),
            })
        );
        assert_eq!(answers[2], Pushed::Queued { sequence: 102 });
        assert_eq!(answers[3], Pushed::Queued { sequence: 103 });
    }

    #[test]
    fn the_vote_service_numbers_each_message_and_marker_and_dates_markers_from_the_first() {
        let marked = |place: MarkerPlace, seconds: u64, stamp: &str| {
            Some(Marker {
                place,
                lifetime: Duration::from_secs(seconds),
                stamp: stamp.into(),
            })
        };
        let field = |bucket: &str, field: &str| MarkerPlace::Field {
            bucket: bucket.into(),
            field: field.into(),
        };
        let votes: Vec<Waiting> = [
            marked(field("h1", "f1"), 5, "s1"),
            None,
            marked(MarkerPlace::Key("k1".into()), 30, "s2"),
            marked(field("h2", "f2"), 5, "s3"),
            marked(field("h1", "f3"), 30, "s4"),
        ]
        .into_iter()
        .map(|marker| Waiting {
            json: r#"{"v":1}"#.into(),
            shard: crate::queue::shard::Shards::ONE.of("v"),
            marker,
            answer: oneshot::channel().0,
        })
        .collect();
        // The first sequence's ms is 1_000; its µs are dropped.
        let arguments = ScriptArguments::of(&votes, 1_000_999);
        let message = |sequence: i64| format!(r#"{{"sequence":{sequence},"v":1}}"#);
        assert_eq!(
            arguments,
            ScriptArguments {
                layout: vec![
                    0, 1, 0, 1, 0, 0, 0, 0, 255, 255, 0, 2, 0, 2, 0, 1, 0, 1, 0, 2
                ],
                first: 1_000_999,
                hashes: vec!["h1", "h2"],
                fields: vec![vec!["f1", "f3"], vec!["f2"]],
                keep_until: vec![31_000, 6_000],
                lifetimes: vec![5_000, 30_000],
                own_keys: vec!["k1"],
                markers: vec![
                    "6000 1000999 s1".into(),
                    "1001001 s2".into(),
                    "6000 1001002 s3".into(),
                    "31000 1001003 s4".into(),
                ],
                messages: (1_000_999..1_001_004).map(message).collect(),
            }
        );
    }

    #[test]
    fn the_script_knows_a_key_of_its_own_by_the_layouts_number() {
        assert!(PUSH_SCRIPT.contains(&format!("if place == {OWN_KEY} then")));
    }

    #[test]
    fn the_script_keeps_the_vote_services_numbers_within_the_clock_skew() {
        let skew = CLOCK_SKEW.as_micros();
        for rule in [
            format!("first >= now - {skew}"),
            format!("first + votes - 1 <= now + {skew}"),
            format!("else first = now + {skew} end"),
        ] {
            assert!(PUSH_SCRIPT.contains(&rule), "{rule}");
        }
    }

    #[test]
    fn an_unreadable_reply_leaves_every_vote_unconfirmed() {
        for bad in [
            reply(&[]),
            reply(&["x"]),
            reply(&["100", "2"]),
            reply(&["100", "9", "90 a 1 b"]),
        ] {
            let answers = Pushed::read_reply(2, &bad);
            assert_eq!(answers.len(), 2);
            assert!(
                answers
                    .iter()
                    .all(|answer| matches!(answer, Err(QueueError::Unconfirmed(_)))),
                "{bad:?}: {answers:?}"
            );
        }
        // A marker someone else wrote: only its vote is unconfirmed.
        let answers = Pushed::read_reply(2, &reply(&["100", "1", "garbage"]));
        assert!(matches!(answers[0], Err(QueueError::Unconfirmed(_))));
        assert_eq!(
            answers[1].clone().unwrap(),
            Pushed::Queued { sequence: 101 }
        );
    }

    /// Pushes two plain votes numbered from `first` through `script`;
    /// returns the sequence each was answered with, having checked that
    /// the queue holds them so.
    async fn push_two_numbered_from(
        script: &Script,
        connection: &mut redis::aio::MultiplexedConnection,
        first: i64,
    ) -> Vec<i64> {
        let mut answered = Vec::new();
        let votes = (0..2)
            .map(|_| {
                let (answer, receiver) = oneshot::channel();
                answered.push(receiver);
                Waiting {
                    json: r#"{"voter_id":"v"}"#.into(),
                    shard: crate::queue::shard::Shards::ONE.of("v"),
                    marker: None,
                    answer,
                }
            })
            .collect();
        let pushing = PushConnection::Single(connection.clone());
        push_numbered(script, &Numbering::default(), pushing, 0, votes, first).await;
        let mut sequences = Vec::new();
        for receiver in answered {
            match receiver.await.unwrap().unwrap() {
                Pushed::Queued { sequence } => sequences.push(sequence),
                repeat => panic!("not a repeat: {repeat:?}"),
            }
        }
        let newest: Vec<String> = connection
            .lrange(crate::queue::QUEUE_KEY, 0, 1)
            .await
            .unwrap();
        let queued: Vec<i64> = newest
            .iter()
            .rev()
            .map(|message| {
                let message: serde_json::Value = serde_json::from_str(message).unwrap();
                message["sequence"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(queued, sequences, "queued as answered");
        sequences
    }

    /// Pushes two votes numbered from `ahead` µs past the clock now and
    /// checks that the numbers stand; returns the first. A push slow
    /// enough to leave the proposal outside the skew by the time the
    /// script ran (a stalled machine) proves nothing and is tried again.
    async fn push_standing(
        script: &Script,
        connection: &mut redis::aio::MultiplexedConnection,
        ahead: i64,
    ) -> i64 {
        // The numbers stand unless the script ran more than this after
        // the proposal (its other bounds hold whenever it runs).
        let margin = CLOCK_SKEW.as_micros() as i64 + ahead;
        for _ in 0..20 {
            let started = std::time::Instant::now();
            let proposal = Utc::now().timestamp_micros() + ahead;
            let numbered = push_two_numbered_from(script, connection, proposal).await;
            if numbered == [proposal, proposal + 1] {
                return proposal;
            }
            let took = started.elapsed().as_micros() as i64;
            assert!(
                took > margin,
                "{numbered:?}, not {proposal}, though the push took {took} µs"
            );
        }
        panic!("no push reached Redis soon enough for its numbers to stand");
    }

    /// The push script's numbering against a real Redis, each case with
    /// the proposal it names: the numbers stand only above the queue's
    /// last sequence and within [`CLOCK_SKEW`] of Redis' clock (the same
    /// host's as the test's).
    #[tokio::test]
    async fn the_script_keeps_proposed_numbers_only_above_the_last_and_near_its_clock() {
        let redis = votemesh_testing::RedisServer::start().await.unwrap();
        let client = redis::Client::open(redis.url().expose()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let script = Script::new(PUSH_SCRIPT);
        let skew = i64::try_from(CLOCK_SKEW.as_micros()).unwrap();
        let now = || Utc::now().timestamp_micros();
        let clock = crate::queue::CLOCK_KEY;

        // No clock yet: numbered from Redis' clock plus the skew, above
        // whatever a vote service ahead of it could have numbered.
        let before = now();
        let numbered = push_two_numbered_from(&script, &mut connection, before).await;
        assert!(numbered[0] >= before + skew, "{numbered:?} from {before}");
        assert_eq!(numbered[1], numbered[0] + 1);

        // Near the clock (here, half the skew ahead of it) and above the
        // last: the proposal stands.
        tokio::time::sleep(CLOCK_SKEW + Duration::from_millis(10)).await;
        let proposal = push_standing(&script, &mut connection, skew / 2).await;

        // Not above the last: after it.
        let numbered = push_two_numbered_from(&script, &mut connection, proposal + 1).await;
        assert!(numbered[0] >= proposal + 2, "{numbered:?} after {proposal}");

        // Ten seconds ahead of Redis' clock, or a second behind it (and
        // above the last): Redis' clock.
        let ahead = now() + 10_000_000;
        let numbered = push_two_numbered_from(&script, &mut connection, ahead).await;
        assert!(numbered[0] < ahead - 9_000_000, "{numbered:?}, not {ahead}");
        let _: () = connection.set(clock, now() - 10_000_000).await.unwrap();
        let behind = now() - 1_000_000;
        let numbered = push_two_numbered_from(&script, &mut connection, behind).await;
        assert!(numbered[0] > behind + 900_000, "{numbered:?}, not {behind}");

        // The clock lost after numbers ahead of Redis' clock stood:
        // numbering starts again above them.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let ahead = push_standing(&script, &mut connection, skew * 4 / 5).await;
        let _: () = connection.del(clock).await.unwrap();
        let numbered = push_two_numbered_from(&script, &mut connection, now()).await;
        assert!(numbered[0] > ahead + 1, "{numbered:?} after {ahead}");
    }
}
