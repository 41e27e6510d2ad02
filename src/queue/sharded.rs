//! One worker's side of a sharded queue (`QUEUE_SHARDS` above 1, on one
//! Redis or a Redis Cluster): the shards it drains are those whose lease
//! it holds, and the leases are shared out among the live workers.
//!
//! ```text
//! every LEASE_RENEW_INTERVAL (the heartbeat):
//!   votes:members (ZSET, score = last heartbeat, server time) ─► live workers
//!   rendezvous hash (worker, shard) ─► the shards this worker should hold
//!   votes:{s}:lease: taken when free or ours, renewed; released when no longer ours
//!   a dead member's processing list in a held shard ─► back to that shard's queue
//!
//! take_batch / take_next ─► one script per held shard, at once, each topping up its
//!                           processing list (votes:{s}:processing:<worker>) ─► one batch
//! ack_batch               ─► one script per shard the batch came from
//! ```
//!
//! Every worker computes the same owner for each shard from the same member
//! list: shard `s` belongs to the live worker with the highest score for
//! it (rendezvous hashing, [`owner`]), so a worker that joins
//! takes about `1/n` of the shards, and one that leaves hands its shards
//! to the others, spread evenly, with no coordinator. A worker takes a
//! shard once its lease is free: released by the previous holder when it
//! sees the new member list, or expired ([`LEASE_TTL`]) if the holder
//! died. A worker that died is dropped from the members after
//! [`MEMBER_TTL`]; its shards are held by others within
//! [`MEMBER_TTL`] + [`LEASE_RENEW_INTERVAL`] of its last heartbeat (12 s),
//! and its in-flight batches go back to their queues then.
//!
//! Correctness never rests on a lease being exclusive: two workers that
//! both drain a shard for a moment (a slow worker whose lease expired)
//! each take different votes, and the database keeps each voter's newest
//! sequence, so a batch applied twice or out of order changes nothing
//! (docs/DESIGN.md, "Ordering and its limit"). The leases only keep the
//! work spread and the batches large.
//!
//! Nothing blocks: a take that finds every held shard empty waits
//! [`POLL_INTERVAL`] and returns, so a cluster's shared node connections
//! never carry a blocking command.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bb8_redis::redis::{self, Script};
use futures_util::future::join_all;
use tokio::sync::Mutex as AsyncMutex;

use super::{
    Backlog, QueueError, QueuedVote, VoteSource,
    connect::classify,
    link::{Link, PushConnection, Target},
    redis::{ACK_SCRIPT, MOVE_OLDEST_LUA},
    shard::{Shard, Shards},
};
use crate::config::QueueLayout;

/// The sorted set of live workers (score: their last heartbeat, in ms of
/// the Redis clock).
pub const MEMBERS_KEY: &str = "votes:members";
/// A worker whose last heartbeat is older is no longer a member.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);
/// A lease not renewed for this long is free.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a worker renews its membership and leases (its heartbeat,
/// `DrainSettings::heartbeat_interval`, should be this).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(2);
/// How long a take that found nothing waits before returning.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Renews this worker's membership and returns the live members. KEYS:
/// the members set. ARGV: worker id, member lifetime in ms, and `1` to
/// join or `0` to leave.
const MEMBERS_SCRIPT: &str = r#"#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// Takes or renews a shard's lease (ARGV[3] `1`) if it is free or ours,
/// or releases it (`0`) if it is ours. KEYS: the lease. ARGV: worker id,
/// lifetime in ms, `1` or `0`. Returns 1 while the lease is ours.
const LEASE_SCRIPT: &str = r#"#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  if holder and holder ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Tops this worker's processing list in one shard up to ARGV[1] and
/// returns all of it (ARGV[3] `1`), or moves up to ARGV[1] and returns
/// only those (`0`). Records the worker among the shard's workers when it
/// moved anything. KEYS: queue, processing list, the shard's workers.
/// ARGV: count, worker id, mode.
const TAKE_BODY: &str = r#"
local want = tonumber(ARGV[1])
if ARGV[3] == '1' then want = want - redis.call('LLEN', KEYS[2]) end
local moved = move_oldest(KEYS[1], KEYS[2], want)
if #moved > 0 then redis.call('SADD', KEYS[3], ARGV[2]) end
if ARGV[3] == '1' then return redis.call('LRANGE', KEYS[2], 0, -1) end
return moved
"#;

/// Returns a departed worker's processing list in one shard to the
/// consuming end of its queue, oldest first, and forgets the worker there.
/// KEYS: the processing list, queue, the shard's workers. ARGV: the
/// worker's id. Returns how many messages moved.
const RECLAIM_BODY: &str = r#"#!lua flags=allow-oom
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
redis.call('SREM', KEYS[3], ARGV[1])
return moved
"#;

/// The shard owner under rendezvous hashing: of `members`, the one with
/// the highest `rendezvous_score` for the shard (ties to the smaller id).
pub fn owner(members: &[String], shard: u16) -> Option<&str> {
    members
        .iter()
        .max_by_key(|member| {
            (
                rendezvous_score(member, shard),
                std::cmp::Reverse(member.as_str()),
            )
        })
        .map(String::as_str)
}

/// A member's score for a shard: the CRC-32 of the member id and the shard
/// number, through SplitMix64's finalizer (CRC-32 alone is linear: scores
/// of similar ids move together, and the shards spread unevenly).
fn rendezvous_score(member: &str, shard: u16) -> u64 {
    let mut z = (u64::from(crc32fast::hash(member.as_bytes())) << 16) ^ u64::from(shard);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One worker's side of a sharded queue.
pub struct ShardedWorkerQueue {
    target: Target,
    shards: Shards,
    worker_id: String,
    link: AsyncMutex<Option<Link>>,
    /// Shards whose lease this worker holds: it takes new votes from these.
    held: Mutex<BTreeSet<u16>>,
    /// Shards where its processing list may hold votes (held ones, and
    /// released ones until their last batch is acknowledged).
    draining: Mutex<BTreeSet<u16>>,
    /// The shard of each message taken and not yet acknowledged.
    taken: Mutex<HashMap<String, u16>>,
    take_script: Script,
    ack_script: Script,
    members_script: Script,
    lease_script: Script,
    reclaim_script: Script,
}

impl std::fmt::Debug for ShardedWorkerQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedWorkerQueue")
            .field("target", &self.target)
            .field("shards", &self.shards.count())
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// Locks a set or map of the queue (no lock is held across an await).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ShardedWorkerQueue {
    /// The worker `worker_id`'s side of the queue at `target` with
    /// `layout`'s shards. Connects lazily; holds no shard until its first
    /// heartbeat ([`VoteSource::reclaim_orphans`]).
    pub fn new(target: Target, layout: QueueLayout, worker_id: &str) -> Result<Self, QueueError> {
        target.check()?;
        Ok(Self {
            target,
            shards: layout.shards,
            worker_id: worker_id.to_owned(),
            link: AsyncMutex::new(None),
            held: Mutex::default(),
            draining: Mutex::default(),
            taken: Mutex::default(),
            take_script: Script::new(&format!(
                "#!lua flags=allow-oom\n{MOVE_OLDEST_LUA}{TAKE_BODY}"
            )),
            ack_script: Script::new(ACK_SCRIPT),
            members_script: Script::new(MEMBERS_SCRIPT),
            lease_script: Script::new(LEASE_SCRIPT),
            reclaim_script: Script::new(RECLAIM_BODY),
        })
    }

    /// The shards whose lease this worker holds now.
    pub fn held_shards(&self) -> Vec<u16> {
        lock(&self.held).iter().copied().collect()
    }

    /// A connection, opening (and checking the layout of) a new link if
    /// there is none or the last one closed.
    async fn connection(&self) -> Result<PushConnection, QueueError> {
        let mut link = self.link.lock().await;
        if let Some(open) = link.as_ref().filter(|open| open.is_open()) {
            return Ok(open.connection());
        }
        let opened = Link::open(&self.target, self.shards).await?;
        let connection = opened.connection();
        *link = Some(opened);
        Ok(connection)
    }

    /// Runs `take` on each of `shards` at once, `budget` each; records
    /// where every message came from.
    async fn take_from(
        &self,
        shards: &[u16],
        budget: usize,
        whole_list: bool,
    ) -> Result<Vec<String>, QueueError> {
        let connection = self.connection().await?;
        let calls = shards.iter().map(|&index| {
            let shard = self.shards.shard(index);
            let mut connection = connection.clone();
            async move {
                let messages: Vec<String> = self
                    .take_script
                    .key(shard.queue_key())
                    .key(shard.processing_key(&self.worker_id))
                    .key(shard.workers_key())
                    .arg(budget)
                    .arg(&self.worker_id)
                    .arg(if whole_list { "1" } else { "0" })
                    .invoke_async(&mut connection)
                    .await
                    .map_err(classify)?;
                Ok::<_, QueueError>((index, messages))
            }
        });
        let mut batch = Vec::new();
        let mut taken = Vec::new();
        for outcome in join_all(calls).await {
            let (index, messages) = outcome?;
            taken.extend(messages.iter().map(|message| (message.clone(), index)));
            batch.extend(messages);
        }
        lock(&self.taken).extend(taken);
        Ok(batch)
    }

    /// The budget of each of `shards` for a batch of `max`.
    fn budget(max: usize, shards: usize) -> usize {
        max.div_ceil(shards.max(1)).max(1)
    }

    /// Leaves: releases every lease and the membership, so the others take
    /// the shards at their next heartbeat instead of after the TTLs. What
    /// is left in this worker's processing lists (nothing, after a clean
    /// stop) is returned by the shards' next holders.
    async fn release_all(&self) -> Result<(), QueueError> {
        let mut connection = self.connection().await?;
        let held: Vec<u16> = std::mem::take(&mut *lock(&self.held)).into_iter().collect();
        for index in held {
            self.lease(&mut connection, &self.shards.shard(index), false)
                .await?;
        }
        self.membership(&mut connection, false).await?;
        Ok(())
    }

    /// Joins (renews this worker's heartbeat in) or leaves the members, and
    /// returns the live members.
    async fn membership(
        &self,
        connection: &mut PushConnection,
        join: bool,
    ) -> Result<Vec<String>, QueueError> {
        self.members_script
            .key(MEMBERS_KEY)
            .arg(&self.worker_id)
            .arg(MEMBER_TTL.as_millis() as u64)
            .arg(if join { "1" } else { "0" })
            .invoke_async(connection)
            .await
            .map_err(classify)
    }

    /// Takes or renews (`want`) or releases a shard's lease; whether it is
    /// ours now.
    async fn lease(
        &self,
        connection: &mut PushConnection,
        shard: &Shard,
        want: bool,
    ) -> Result<bool, QueueError> {
        let ours: i64 = self
            .lease_script
            .key(shard.lease_key())
            .arg(&self.worker_id)
            .arg(LEASE_TTL.as_millis() as u64)
            .arg(if want { "1" } else { "0" })
            .invoke_async(connection)
            .await
            .map_err(classify)?;
        Ok(ours == 1)
    }

    /// Returns to a held shard's queue the processing lists of workers
    /// that are no longer members. Returns how many messages moved.
    async fn reclaim_departed(
        &self,
        connection: &mut PushConnection,
        shard: &Shard,
        members: &[String],
    ) -> Result<usize, QueueError> {
        let workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(shard.workers_key())
            .query_async(connection)
            .await
            .map_err(classify)?;
        let mut reclaimed = 0;
        for worker in workers {
            if worker == self.worker_id || members.contains(&worker) {
                continue;
            }
            let moved: usize = self
                .reclaim_script
                .key(shard.processing_key(&worker))
                .key(shard.queue_key())
                .key(shard.workers_key())
                .arg(&worker)
                .invoke_async(connection)
                .await
                .map_err(classify)?;
            if moved > 0 {
                tracing::warn!(
                    worker_id = %worker,
                    shard = shard.index(),
                    moved,
                    "returned the batch of a departed worker to its shard's queue"
                );
            }
            reclaimed += moved;
        }
        Ok(reclaimed)
    }
}

impl VoteSource for ShardedWorkerQueue {
    async fn take_batch(&self, max: usize, wait: Duration) -> Result<Vec<String>, QueueError> {
        let held: BTreeSet<u16> = lock(&self.held).clone();
        let draining: Vec<u16> = lock(&self.draining).iter().copied().collect();
        // Held shards are topped up; released ones only give back what is
        // left in this worker's processing list there.
        let mut batch = self
            .take_from(
                &held.iter().copied().collect::<Vec<_>>(),
                Self::budget(max, held.len()),
                true,
            )
            .await?;
        let released: Vec<u16> = draining
            .into_iter()
            .filter(|index| !held.contains(index))
            .collect();
        if !released.is_empty() {
            batch.extend(self.take_from(&released, 0, true).await?);
        }
        if batch.is_empty() && !wait.is_zero() {
            tokio::time::sleep(wait.min(POLL_INTERVAL)).await;
        }
        Ok(batch)
    }

    async fn take_next(&self, max: usize) -> Result<Vec<String>, QueueError> {
        let held: Vec<u16> = lock(&self.held).iter().copied().collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.take_from(&held, Self::budget(max, held.len()), false)
            .await
    }

    async fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> Result<usize, QueueError> {
        if committed.is_empty() {
            return Ok(0);
        }
        // Group the batch by the shard each message was taken from, in the
        // batch's order (newest first per shard, as each list holds them).
        let mut by_shard: HashMap<u16, (Vec<&String>, Vec<&String>)> = HashMap::new();
        {
            let taken = lock(&self.taken);
            let dead: BTreeSet<&String> = dead_letters.iter().collect();
            for message in committed {
                let index = taken.get(message).copied().or_else(|| {
                    QueuedVote::parse(message)
                        .ok()
                        .map(|vote| self.shards.of(&vote.voter_id).index())
                });
                let Some(index) = index else { continue };
                let entry = by_shard.entry(index).or_default();
                entry.0.push(message);
                if dead.contains(message) {
                    entry.1.push(message);
                }
            }
        }
        let connection = self.connection().await?;
        let calls = by_shard.into_iter().map(|(index, (batch, dead))| {
            let shard = self.shards.shard(index);
            let mut connection = connection.clone();
            async move {
                let removed: usize = self
                    .ack_script
                    .key(shard.processing_key(&self.worker_id))
                    .key(shard.dead_letter_key())
                    .arg(dead.len())
                    .arg(dead)
                    .arg(batch)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(classify)?;
                Ok::<_, QueueError>(removed)
            }
        });
        let mut removed = 0;
        for outcome in join_all(calls).await {
            removed += outcome?;
        }
        let mut taken = lock(&self.taken);
        for message in committed {
            taken.remove(message);
        }
        Ok(removed)
    }

    /// The heartbeat: renews the membership, takes the leases of the
    /// shards this worker should hold and releases the others, returns to
    /// their queues the batches of departed workers in the shards it holds,
    /// and forgets released shards whose processing list is empty.
    async fn reclaim_orphans(&self) -> Result<usize, QueueError> {
        let mut connection = self.connection().await?;
        let members = self.membership(&mut connection, true).await?;
        let mut reclaimed = 0;
        for shard in self.shards.all() {
            let mine = owner(&members, shard.index()) == Some(self.worker_id.as_str());
            let was_held = lock(&self.held).contains(&shard.index());
            if !mine && !was_held {
                continue;
            }
            let held = self.lease(&mut connection, &shard, mine).await?;
            if held {
                lock(&self.held).insert(shard.index());
                lock(&self.draining).insert(shard.index());
                reclaimed += self
                    .reclaim_departed(&mut connection, &shard, &members)
                    .await?;
            } else {
                lock(&self.held).remove(&shard.index());
            }
        }
        let released: Vec<u16> = {
            let held = lock(&self.held);
            lock(&self.draining)
                .iter()
                .filter(|index| !held.contains(index))
                .copied()
                .collect()
        };
        for index in released {
            let shard = self.shards.shard(index);
            let left: u64 = redis::cmd("LLEN")
                .arg(shard.processing_key(&self.worker_id))
                .query_async(&mut connection)
                .await
                .map_err(classify)?;
            if left == 0 {
                lock(&self.draining).remove(&index);
            }
        }
        let held = lock(&self.held).len();
        metrics::gauge!("votemesh_worker_shards_held").set(held as f64);
        Ok(reclaimed)
    }

    /// What waits in every shard (all of them, not only the held ones:
    /// the queue's backlog), dated by the oldest; each held shard's depth
    /// and the age of its oldest vote (how far behind it is) are also
    /// published, as `votemesh_queue_shard_depth{shard}` and
    /// `votemesh_queue_shard_oldest_age_seconds{shard}`.
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let connection = self.connection().await?;
        let calls = self.shards.all().map(|shard| {
            let mut connection = connection.clone();
            async move {
                let (depth, oldest): (u64, Option<String>) = redis::pipe()
                    .llen(shard.queue_key())
                    .lindex(shard.queue_key(), -1)
                    .query_async(&mut connection)
                    .await
                    .map_err(classify)?;
                Ok::<_, QueueError>((shard.index(), Backlog::of(depth, oldest.as_deref())))
            }
        });
        let held = lock(&self.held).clone();
        let mut total = Backlog::default();
        for outcome in join_all(calls).await {
            let (index, backlog) = outcome?;
            if held.contains(&index) {
                let shard = index.to_string();
                metrics::gauge!("votemesh_queue_shard_depth", "shard" => shard.clone())
                    .set(backlog.depth as f64);
                metrics::gauge!("votemesh_queue_shard_oldest_age_seconds", "shard" => shard)
                    .set(backlog.oldest_age(chrono::Utc::now()).as_secs_f64());
            }
            total.depth += backlog.depth;
            total.oldest_cast_at = match (total.oldest_cast_at, backlog.oldest_cast_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(total)
    }

    async fn leave(&self) -> Result<(), QueueError> {
        self.release_all().await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let mut connection = self.connection().await?;
        super::link::ping(&mut connection, self.shards).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_has_one_owner_and_the_shards_spread_over_the_members() {
        let members: Vec<String> = ["worker-a", "worker-b", "worker-c"]
            .map(str::to_owned)
            .to_vec();
        let mut per_member: HashMap<&str, usize> = HashMap::new();
        for shard in 0..64 {
            *per_member
                .entry(owner(&members, shard).unwrap())
                .or_default() += 1;
        }
        assert_eq!(per_member.values().sum::<usize>(), 64);
        assert_eq!(per_member.len(), 3, "{per_member:?}");
        assert!(
            per_member.values().all(|&count| (12..=32).contains(&count)),
            "{per_member:?}"
        );
        // A member leaving moves only its own shards.
        let two = members[..2].to_vec();
        for shard in 0..64 {
            let before = owner(&members, shard).unwrap();
            if before != "worker-c" {
                assert_eq!(owner(&two, shard), Some(before), "shard {shard}");
            }
        }
        assert_eq!(owner(&[], 0), None);
    }
}
