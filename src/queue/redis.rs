//! The vote queue on Redis. Votes are pushed by the [`super::pusher`] task
//! over one multiplexed connection, in batches; everything else (the
//! readiness probe's PING, the worker's commands, including its blocking
//! move) goes through a bb8 pool, whose connections are exclusive while
//! checked out, so a blocking command never stalls a shared socket.
//!
//! [`RedisQueue`] owns its pusher: it starts it at the first push, ends it
//! when its last clone is dropped, and its readiness check
//! ([`VoteSink::ping`]) looks at it. A pusher whose task ended (it cannot
//! return while owned, so a panic) is logged, replaced, and fails that
//! check: the vote service reports NOT_SERVING for one probe interval
//! instead of staying SERVING while refusing every vote; meanwhile its
//! pushes are refused as UNAVAILABLE (nothing was sent). Restarting, not
//! stopping the process, is the policy because the pusher holds no state
//! a new one lacks (a connection, the votes waiting: those of the dead one
//! were answered), and the vote service's other work goes on.
//!
//! Every multi-step operation is one Lua script, so it is atomic on the
//! Redis server: stamping and pushing a vote, topping up a batch,
//! acknowledging a batch, returning an orphaned batch. Keys are in
//! [`super`] (`votes`, `votes:processing:*`, ...).
//!
//! Redis run with `maxmemory` and `maxmemory-policy noeviction` refuses
//! writes that may grow its memory once full: pushing a vote is refused
//! ([`QueueError::Full`]), while the worker's scripts, which only move or
//! remove messages, are declared `allow-oom` so the queue can still drain.
//! Errors are sorted by `connect::classify`: refused before anything ran, or sent
//! and unanswered (the command may have taken effect).

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bb8_redis::{
    bb8::{self, Pool, PooledConnection, RunError},
    redis::{
        self, AsyncCommands, RedisError, Script, cluster::ClusterClient,
        cluster_async::ClusterConnection,
    },
};
use tokio::sync::OnceCell;

use super::connect::{RESPONSE_TIMEOUT, RedisManager, classify};
use super::link::{self, Target};
use super::pusher::{Marker, PushHandle, Pushed, Pusher};
use super::{
    Backlog, DEAD_LETTER_KEY, HEARTBEAT_KEY_PREFIX, NewVote, PROCESSING_KEY_PREFIX, QUEUE_KEY,
    QueueError, QueuedVote, VoteSink, VoteSource,
};
use crate::{
    config::{ConnectionUrl, QueueLayout},
    tls::Tls,
};

/// How long a caller waits for a pooled connection before the queue counts
/// as unavailable. Kept short so CastVote answers UNAVAILABLE quickly.
pub const POOL_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections kept per process.
pub const POOL_SIZE: u32 = 16;
/// A worker that has not marked itself alive for this long is presumed dead
/// and its in-flight batch is returned to the queue.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(30);
/// Longest single blocking wait for a vote: the response timeout
/// ([`RESPONSE_TIMEOUT`]) less a margin for the round trip, so a BLMOVE
/// that found nothing answers before the client gives up on it, and
/// waiting never reads as a dead connection.
const MAX_BLOCKING_WAIT: Duration = RESPONSE_TIMEOUT.saturating_sub(BLOCKING_ANSWER_MARGIN);
/// Time left between the end of a blocking wait and the response timeout,
/// for Redis' answer to arrive.
const BLOCKING_ANSWER_MARGIN: Duration = Duration::from_millis(200);
const _: () = assert!(
    MAX_BLOCKING_WAIT.as_nanos() > 0,
    "the response timeout leaves no time to wait"
);

/// Moves the `want` oldest queued messages (or all, if fewer) into the
/// processing list at once, as `LMOVE queue processing RIGHT LEFT` would
/// one by one (the oldest goes in first, so the list holds them newest
/// first, oldest at its consuming right end), and returns them in that
/// order. One `LRANGE`, one `LTRIM` and one `LPUSH` per 1,000 messages
/// (Lua's `unpack` must stay under its stack limit of about 8,000 values
/// whatever `BATCH_SIZE` is), instead of one `LMOVE` per message, which
/// with one `LREM` per message cost Redis 8 µs a drained vote
/// (docs/BENCHMARKS.md, "What run E changed"). Shared by the two take
/// scripts below.
pub(super) const MOVE_OLDEST_LUA: &str = r#"
local function move_oldest(queue, processing, want)
  if want <= 0 then return {} end
  local moved = redis.call('LRANGE', queue, -want, -1)
  local n = #moved
  if n == 0 then return moved end
  redis.call('LTRIM', queue, 0, -(n + 1))
  local chunk = 1000
  for last = n, 1, -chunk do
    local first = math.max(1, last - chunk + 1)
    local oldest_first = {}
    for i = last, first, -1 do oldest_first[#oldest_first + 1] = moved[i] end
    redis.call('LPUSH', processing, unpack(oldest_first))
  end
  return moved
end
"#;

/// Tops the processing list up to ARGV[1] messages from the queue and
/// returns all of it. KEYS: queue, processing list. Moving messages does
/// not grow Redis' memory for long (the queue's copies are freed in the
/// same step), so it runs at `maxmemory` too (`allow-oom`): draining is
/// how a full queue makes room.
const TAKE_BATCH_SCRIPT: &str = r#"
local n = redis.call('LLEN', KEYS[2])
move_oldest(KEYS[1], KEYS[2], tonumber(ARGV[1]) - n)
return redis.call('LRANGE', KEYS[2], 0, -1)
"#;

/// Moves up to ARGV[1] messages from the queue into the processing list
/// and returns only those: the next batch, taken while the one before it
/// is written. Newest first, as the list holds them and as the take above
/// returns them: the acknowledgement finds the batch at the list's tail in
/// that order. KEYS: queue, processing list. `allow-oom`, as for the take
/// above.
const TAKE_NEXT_SCRIPT: &str = r#"
return move_oldest(KEYS[1], KEYS[2], tonumber(ARGV[1]))
"#;

/// Removes exactly the committed messages of a batch from the processing
/// list and moves the dead letters among them to the dead-letter list.
///
/// The batch normally sits whole at the list's consuming (right) end, in
/// the order the take returned it: then one `LRANGE` confirms it message
/// by message and one `LTRIM` removes it. Otherwise (a peer reclaimed the
/// list meanwhile, and what is there now is something else) each message
/// is removed on its own, nearest the right end; a message that is no
/// longer there is skipped. Either way a message that is not part of the
/// batch (the next batch, or one a late blocking move put in) stays: it
/// sits left of the batch, and LTRIM keeps the left part. Runs at
/// `maxmemory` (`allow-oom`): it frees memory. KEYS: processing list,
/// dead-letter list. ARGV: the number of dead letters `d`, the `d` dead
/// letters, then the whole batch (dead letters included), newest first.
/// Returns the number of messages removed.
pub(super) const ACK_SCRIPT: &str = r#"#!lua flags=allow-oom
local dead = tonumber(ARGV[1])
local first = dead + 2
local n = #ARGV - first + 1
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
local whole = #tail == n
if whole then
  for i = 1, n do
    if tail[i] ~= ARGV[first + i - 1] then whole = false break end
  end
end
if whole then
  redis.call('LTRIM', KEYS[1], 0, -(n + 1))
  for i = 2, dead + 1 do redis.call('LPUSH', KEYS[2], ARGV[i]) end
  return n
end
local is_dead = {}
for i = 2, dead + 1 do is_dead[ARGV[i]] = true end
local removed = 0
for i = #ARGV, first, -1 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    removed = removed + 1
    if is_dead[ARGV[i]] then redis.call('LPUSH', KEYS[2], ARGV[i]) end
  end
end
return removed
"#;

/// Marks a worker alive for ARGV[1] seconds. A script only to run at
/// `maxmemory` too (`allow-oom`, which a plain SET is not): a worker that
/// cannot mark itself alive would have its batch taken away while it works.
/// KEYS: the worker's heartbeat key.
const HEARTBEAT_SCRIPT: &str = r#"#!lua flags=allow-oom
redis.call('SET', KEYS[1], 'alive', 'EX', ARGV[1])
return 1
"#;

/// Returns an orphaned processing list to the consuming end of the queue,
/// oldest first, unless its worker marked itself alive meanwhile. Runs at
/// `maxmemory` (`allow-oom`): it moves messages, it does not add any.
/// KEYS: processing list, its worker's heartbeat key, queue. Returns the
/// number of messages moved.
const RECLAIM_SCRIPT: &str = r#"#!lua flags=allow-oom
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
return moved
"#;

/// A take script: `body` with [`MOVE_OLDEST_LUA`] before it, flagged
/// `allow-oom`.
fn take_script(body: &str) -> String {
    format!("#!lua flags=allow-oom\n{MOVE_OLDEST_LUA}{body}")
}

/// Producer side: what the vote service pushes votes through.
#[derive(Clone, Debug)]
pub struct RedisQueue {
    backend: Backend,
    /// Its shards and replica acknowledgements.
    layout: QueueLayout,
    /// The pusher, owned here and shared by clones: started by the first
    /// push (it needs the runtime), replaced by [`VoteSink::ping`] (the
    /// readiness check) if its task ended; dropped, and so ended, with the
    /// last clone.
    pusher: Arc<Mutex<Option<Pusher>>>,
}

/// The Redis a [`RedisQueue`] is on.
#[derive(Clone)]
enum Backend {
    /// One Redis: the pusher's connection, and a pool for the rest.
    Single {
        pool: Pool<RedisManager>,
        url: ConnectionUrl,
        /// The identity a `rediss://` connection verifies Redis with (and
        /// presents); `None`: the system's CA store.
        tls: Option<Tls>,
    },
    /// A Redis Cluster: the pusher's cluster connection, and one more,
    /// opened at the first readiness check, for its PINGs.
    Cluster {
        client: Box<ClusterClient>,
        probe: Arc<OnceCell<ClusterConnection>>,
    },
}

impl std::fmt::Debug for Backend {
    /// The URL (its password redacted) or the cluster's seeds; a cluster
    /// connection has no `Debug` of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single { url, .. } => f.debug_tuple("Single").field(url).finish(),
            Self::Cluster { .. } => f.write_str("Cluster"),
        }
    }
}

impl RedisQueue {
    /// The producer side of a queue on the Redis Cluster reached through
    /// `seeds` (`host:port`, `REDIS_CLUSTER_NODES`), with `layout`'s
    /// shards and replica acknowledgements. Connects lazily. Plaintext:
    /// TLS to a cluster is not supported yet.
    pub fn cluster(seeds: &[String], layout: QueueLayout) -> Result<Self, QueueError> {
        Ok(Self {
            backend: Backend::Cluster {
                client: Box::new(link::cluster_client(seeds)?),
                probe: Arc::default(),
            },
            layout,
            pusher: Arc::default(),
        })
    }

    /// A queue on the Redis at `url`. Connects lazily: Redis need not be
    /// up yet, and the pool reconnects after Redis restarts. A `rediss://`
    /// URL verifies Redis against the system's CA store.
    pub fn new(url: &ConnectionUrl) -> Result<Self, QueueError> {
        Self::with_tls(url, None)
    }

    /// [`RedisQueue::new`] where a `rediss://` URL verifies Redis against
    /// `tls`'s CA (`TLS_CA_FILE`) and presents its certificate if Redis
    /// asks for one (see [`super::connect`]).
    pub fn with_tls(url: &ConnectionUrl, tls: Option<Tls>) -> Result<Self, QueueError> {
        Self::single(url, tls, QueueLayout::SINGLE)
    }

    /// [`RedisQueue::with_tls`] with `layout`'s shards (`QUEUE_SHARDS`) and
    /// replica acknowledgements (`REDIS_REPLICA_ACKS`) on one Redis.
    pub fn single(
        url: &ConnectionUrl,
        tls: Option<Tls>,
        layout: QueueLayout,
    ) -> Result<Self, QueueError> {
        let manager = RedisManager::new(url, tls.clone()).map_err(|error| {
            QueueError::Failed(format!("cannot build a Redis client for {url}: {error}"))
        })?;
        // Every check-out PINGs the connection first (bb8's default): the
        // pool cannot otherwise tell a connection Redis closed, and its
        // users (the probe, the worker's per-batch commands) are few.
        let pool = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(POOL_CHECKOUT_TIMEOUT)
            .build_unchecked(manager);
        Ok(Self {
            backend: Backend::Single {
                pool,
                url: url.clone(),
                tls,
            },
            layout,
            pusher: Arc::default(),
        })
    }

    /// The queue's shards and replica acknowledgements.
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// Where the pusher connects.
    fn target(&self) -> Target {
        match &self.backend {
            Backend::Single { url, tls, .. } => Target::Single {
                url: url.clone(),
                tls: tls.clone(),
            },
            Backend::Cluster { client, .. } => Target::Cluster(client.clone()),
        }
    }

    /// The pool of a single Redis; a cluster has none.
    fn pool(&self) -> Result<&Pool<RedisManager>, QueueError> {
        match &self.backend {
            Backend::Single { pool, .. } => Ok(pool),
            Backend::Cluster { .. } => Err(QueueError::Failed(
                "this queue is on a Redis Cluster: a worker drains it with the sharded source"
                    .into(),
            )),
        }
    }

    /// The consumer side of this queue for the worker `worker_id`.
    pub fn for_worker(&self, worker_id: &str) -> RedisWorkerQueue {
        RedisWorkerQueue {
            queue: self.clone(),
            processing_key: super::processing_key(worker_id),
            heartbeat_key: format!("{HEARTBEAT_KEY_PREFIX}{worker_id}"),
            take_script: Script::new(&take_script(TAKE_BATCH_SCRIPT)),
            take_next_script: Script::new(&take_script(TAKE_NEXT_SCRIPT)),
            ack_script: Script::new(ACK_SCRIPT),
            heartbeat_script: Script::new(HEARTBEAT_SCRIPT),
            reclaim_script: Script::new(RECLAIM_SCRIPT),
        }
    }

    /// A pooled connection. Nothing has been sent when this fails (a new
    /// connection could not be opened, or none came free in time), so the
    /// error is always [`QueueError::Unavailable`].
    async fn connection(&self) -> Result<PooledConnection<'_, RedisManager>, QueueError> {
        self.pool()?.get().await.map_err(|error| match error {
            RunError::User(error) => QueueError::Unavailable(error.to_string()),
            RunError::TimedOut => {
                QueueError::Unavailable("no Redis connection within the timeout".into())
            }
        })
    }

    /// Publishes the pool's state for `/metrics`: connections idle and
    /// busy, check-outs by how they went, connections closed as broken.
    pub fn record_pool_metrics(&self) {
        let Ok(pool) = self.pool() else { return };
        let state = pool.state();
        let busy = state.connections.saturating_sub(state.idle_connections);
        metrics::gauge!("votemesh_redis_pool_connections", "state" => "idle")
            .set(f64::from(state.idle_connections));
        metrics::gauge!("votemesh_redis_pool_connections", "state" => "busy").set(f64::from(busy));
        let stats = &state.statistics;
        for (outcome, count) in [
            ("direct", stats.get_direct),
            ("waited", stats.get_waited),
            ("timed_out", stats.get_timed_out),
        ] {
            metrics::counter!("votemesh_redis_pool_checkouts_total", "outcome" => outcome)
                .absolute(count);
        }
        metrics::counter!("votemesh_redis_pool_connections_closed_total", "reason" => "broken")
            .absolute(stats.connections_closed_broken);
    }

    /// The pusher's slot. No lock is held across an await.
    fn pusher_slot(&self) -> MutexGuard<'_, Option<Pusher>> {
        self.pusher.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle to the pusher, started now if none was. A pusher whose task
    /// ended is not replaced here but by [`Self::check_pusher`]: its pushes
    /// are refused until then, and readiness says why.
    fn push_handle(&self) -> Result<PushHandle, QueueError> {
        let mut slot = self.pusher_slot();
        if let Some(pusher) = slot.as_ref() {
            return Ok(pusher.handle());
        }
        let pusher = Pusher::spawn(self.target(), self.layout)?;
        let handle = pusher.handle();
        *slot = Some(pusher);
        Ok(handle)
    }

    /// The owner's check of its pusher: a pusher whose task ended (a bug:
    /// its channel was open) is logged with why, replaced by a new one,
    /// and reported as [`QueueError::Unavailable`], so this readiness check
    /// fails once; the next one, with the new pusher running, can pass.
    fn check_pusher(&self) -> Result<(), QueueError> {
        let mut slot = self.pusher_slot();
        if slot.as_ref().is_none_or(Pusher::is_running) {
            return Ok(());
        }
        let reason = slot
            .take()
            .and_then(Pusher::ended)
            .unwrap_or_else(|| "unknown".to_owned());
        tracing::error!(%reason, "the vote pusher stopped; starting a new one");
        *slot = Some(Pusher::spawn(self.target(), self.layout)?);
        Err(QueueError::Unavailable(format!(
            "the vote pusher had stopped ({reason}); a new one was started"
        )))
    }

    /// Ends the pusher's task as a panic in it would, leaving it in place
    /// for [`VoteSink::ping`] to notice. For tests; nothing in the product
    /// calls it.
    #[doc(hidden)]
    pub fn abort_pusher(&self) {
        if let Some(pusher) = self.pusher_slot().as_ref() {
            pusher.abort();
        }
    }

    /// PINGs Redis (the single node, or every primary of the cluster) and
    /// checks the queue's layout, as the pusher does on each new
    /// connection, so a component started with another `QUEUE_SHARDS` than
    /// the queue was set up with is not ready, and says why.
    async fn ping_redis(&self) -> Result<(), QueueError> {
        match &self.backend {
            Backend::Single { .. } => {
                let mut connection = self.connection().await?;
                link::ping(&mut *connection, self.layout.shards).await
            }
            Backend::Cluster { client, probe } => {
                let mut connection = probe
                    .get_or_try_init(|| client.get_async_connection())
                    .await
                    .map_err(|error| QueueError::Unavailable(error.to_string()))?
                    .clone();
                link::ping(&mut connection, self.layout.shards).await
            }
        }
    }
}

impl VoteSink for RedisQueue {
    async fn push(&self, vote: &NewVote) -> Result<QueuedVote, QueueError> {
        let json = serde_json::to_string(vote)
            .map_err(|error| QueueError::Failed(format!("cannot encode the vote: {error}")))?;
        let shard = self.layout.shards.of(&vote.voter_id);
        let marker = vote.idempotency.as_ref().map(|idempotency| Marker {
            place: shard.marker_place(&idempotency.key, &vote.voter_id),
            lifetime: idempotency.window,
            stamp: Marker::stamp(vote.vote_id, vote.cast_at, &vote.option_id),
        });
        match self.push_handle()?.push(json, shard, marker).await? {
            Pushed::Queued { sequence } => Ok(QueuedVote::stamped(vote, sequence)),
            Pushed::Repeat(first) => Ok(QueuedVote {
                sequence: first.sequence,
                vote_id: first.vote_id,
                cast_at: first.cast_at,
                option_id: first.option_id,
                ..QueuedVote::stamped(vote, first.sequence)
            }),
        }
    }

    /// The readiness check: the pusher runs (`check_pusher`, which starts
    /// a new one if not) and Redis answers a PING.
    async fn ping(&self) -> Result<(), QueueError> {
        self.check_pusher()?;
        self.ping_redis().await
    }

    fn record_pool_metrics(&self) {
        RedisQueue::record_pool_metrics(self);
    }
}

/// Consumer side: one worker's view of the queue, with its own processing
/// list (`votes:processing:<worker id>`).
#[derive(Clone, Debug)]
pub struct RedisWorkerQueue {
    queue: RedisQueue,
    processing_key: String,
    heartbeat_key: String,
    take_script: Script,
    take_next_script: Script,
    ack_script: Script,
    heartbeat_script: Script,
    reclaim_script: Script,
}

impl RedisWorkerQueue {
    /// Tops the processing list up to `max` and returns all of it.
    async fn top_up(
        &self,
        connection: &mut PooledConnection<'_, RedisManager>,
        max: usize,
    ) -> Result<Vec<String>, QueueError> {
        self.take_script
            .key(QUEUE_KEY)
            .key(&self.processing_key)
            .arg(max)
            .invoke_async(&mut **connection)
            .await
            .map_err(classify)
    }
}

impl VoteSource for RedisWorkerQueue {
    async fn take_batch(&self, max: usize, wait: Duration) -> Result<Vec<String>, QueueError> {
        let mut connection = self.queue.connection().await?;
        let batch = self.top_up(&mut connection, max).await?;
        if !batch.is_empty() || wait.is_zero() {
            return Ok(batch);
        }
        // Nothing queued: block until a vote arrives (or the wait ends),
        // moving it straight into the processing list.
        let blocking = wait.min(MAX_BLOCKING_WAIT).as_secs_f64();
        let first: Option<String> = connection
            .blmove(
                QUEUE_KEY,
                &self.processing_key,
                redis::Direction::Right,
                redis::Direction::Left,
                blocking,
            )
            .await
            .map_err(classify)?;
        if first.is_none() {
            return Ok(Vec::new());
        }
        // The batch is always the whole processing list, as the ack assumes:
        // an earlier BLMOVE the client gave up on may have landed too.
        self.top_up(&mut connection, max).await
    }

    async fn take_next(&self, max: usize) -> Result<Vec<String>, QueueError> {
        let mut connection = self.queue.connection().await?;
        self.take_next_script
            .key(QUEUE_KEY)
            .key(&self.processing_key)
            .arg(max)
            .invoke_async(&mut *connection)
            .await
            .map_err(classify)
    }

    async fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> Result<usize, QueueError> {
        if committed.is_empty() {
            return Ok(0);
        }
        let mut connection = self.queue.connection().await?;
        self.ack_script
            .key(&self.processing_key)
            .key(DEAD_LETTER_KEY)
            .arg(dead_letters.len())
            .arg(dead_letters)
            .arg(committed)
            .invoke_async(&mut *connection)
            .await
            .map_err(classify)
    }

    async fn reclaim_orphans(&self) -> Result<usize, QueueError> {
        let mut connection = self.queue.connection().await?;
        let _: i64 = self
            .heartbeat_script
            .key(&self.heartbeat_key)
            .arg(HEARTBEAT_TTL.as_secs())
            .invoke_async(&mut *connection)
            .await
            .map_err(classify)?;
        let processing_lists: Vec<String> = {
            let mut keys = Vec::new();
            let mut iter: redis::AsyncIter<String> = connection
                .scan_match(format!("{PROCESSING_KEY_PREFIX}*"))
                .await
                .map_err(classify)?;
            while let Some(key) = iter.next_item().await {
                keys.push(key.map_err(classify)?);
            }
            keys
        };
        let mut reclaimed = 0;
        for processing_key in processing_lists {
            if processing_key == self.processing_key {
                continue;
            }
            let worker_id = &processing_key[PROCESSING_KEY_PREFIX.len()..];
            let moved: Result<usize, RedisError> = self
                .reclaim_script
                .key(&processing_key)
                .key(format!("{HEARTBEAT_KEY_PREFIX}{worker_id}"))
                .key(QUEUE_KEY)
                .invoke_async(&mut *connection)
                .await;
            match moved.map_err(classify) {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::warn!(
                        worker_id,
                        moved,
                        "returned the batch of a worker presumed dead to the queue"
                    );
                    reclaimed += moved;
                }
                Err(QueueError::Failed(reason)) => {
                    // One odd key (of another type) must not stop the others.
                    tracing::warn!(key = %processing_key, %reason, "cannot reclaim this processing list");
                }
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(reclaimed)
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let mut connection = self.queue.connection().await?;
        // The oldest vote sits at the consuming (right) end.
        let (depth, oldest): (u64, Option<String>) = redis::pipe()
            .llen(QUEUE_KEY)
            .lindex(QUEUE_KEY, -1)
            .query_async(&mut *connection)
            .await
            .map_err(classify)?;
        Ok(Backlog::of(depth, oldest.as_deref()))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.queue.ping_redis().await
    }

    fn record_pool_metrics(&self) {
        self.queue.record_pool_metrics();
    }
}
