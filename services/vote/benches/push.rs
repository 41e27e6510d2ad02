//! Bench (not a test): votes pushed to Redis per second by the vote
//! service's queue, at several concurrencies, next to two references in
//! the same run on the same redis-server:
//!
//! - `pool+PING`: the path before the pusher, rebuilt here: a bb8 pool of
//!   16 connections checked out with a PING, then one EVALSHA of the
//!   previous push script (per-voter hash) per vote;
//! - `redis-benchmark LPUSH`: Redis' own client, one LPUSH per request, at
//!   the same concurrency (the ceiling of one command per vote).
//!
//! `cargo bench -p votemesh-vote --bench push` (BENCH_SECONDS=N per figure,
//! default 3). A throwaway measurement for the data-path work; the project's
//! benchmark suite is the load generator's.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bb8_redis::{RedisConnectionManager, bb8, redis::Script};
use chrono::Utc;
use uuid::Uuid;
use votemesh::queue::{NewVote, VoteSink, redis::RedisQueue};
use votemesh_testing::RedisServer;

/// The push script of the release before the pusher (per-voter hash).
const OLD_PUSH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local seq = now
if last >= now then seq = last + 1 end
local seq_text = string.format('%d', seq)
redis.call('HSET', KEYS[2], ARGV[1], seq_text)
redis.call('LPUSH', KEYS[1], '{"sequence":' .. seq_text .. ',' .. string.sub(ARGV[2], 2))
return seq_text
"#;

fn vote(i: u64) -> NewVote {
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: format!("voter-{i}"),
        option_id: if i.is_multiple_of(2) { "a" } else { "b" }.into(),
        cast_at: Utc::now(),
        trace_context: Default::default(),
        idempotency: None,
    }
}

/// Runs `concurrency` loops of `push` for `seconds`; votes per second.
async fn rate<F, Fut>(concurrency: usize, seconds: f64, push: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let push = Arc::new(push);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for worker in 0..concurrency as u64 {
        let (push, done, stop) = (push.clone(), done.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut i = worker << 32;
            while !stop.load(Ordering::Relaxed) {
                push(i).await;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await.unwrap();
    }
    counted as f64 / elapsed
}

fn redis_benchmark(port: u16, concurrency: usize) -> f64 {
    let output = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &concurrency.to_string()])
        .args(["-n", "200000", "-t", "lpush", "-q"])
        .output()
        .expect("redis-benchmark (apt-get install -y redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // "LPUSH: 81234.56 requests per second, p50=..."
    text.rsplit("LPUSH: ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3.0);
    let redis = RedisServer::start().await.expect("redis-server");
    println!(
        "| concurrency | pusher (votes/s) | pool+PING, old script (votes/s) | pusher / old | redis-benchmark LPUSH (req/s) | pusher / LPUSH |"
    );
    println!("|---|---|---|---|---|---|");
    for concurrency in [1, 16, 64, 256] {
        redis.command(&["FLUSHALL"]).await.unwrap();
        let queue = RedisQueue::new(&redis.url()).unwrap();
        let new = rate(concurrency, seconds, move |i| {
            let queue = queue.clone();
            async move {
                queue.push(&vote(i)).await.unwrap();
            }
        })
        .await;

        redis.command(&["FLUSHALL"]).await.unwrap();
        let pool = bb8::Pool::builder()
            .max_size(16)
            .build(RedisConnectionManager::new(redis.url().expose()).unwrap())
            .await
            .unwrap();
        let script = Script::new(OLD_PUSH_SCRIPT);
        let old = rate(concurrency, seconds, move |i| {
            let (pool, script) = (pool.clone(), script.clone());
            async move {
                let vote = vote(i);
                let json = serde_json::to_string(&vote).unwrap();
                let mut connection = pool.get().await.unwrap();
                let _: String = script
                    .key("votes")
                    .key("votes:voter-sequence")
                    .arg(&vote.voter_id)
                    .arg(json)
                    .invoke_async(&mut *connection)
                    .await
                    .unwrap();
            }
        })
        .await;

        redis.command(&["FLUSHALL"]).await.unwrap();
        let ceiling = redis_benchmark(redis.port(), concurrency);
        println!(
            "| {concurrency} | {new:.0} | {old:.0} | {:.2} | {ceiling:.0} | {:.2} |",
            new / old,
            new / ceiling
        );
    }
}
