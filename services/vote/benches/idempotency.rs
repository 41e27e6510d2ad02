//! Bench (not a test): what idempotency markers cost Redis. Redis' CPU
//! time per queued vote (read from `/proc`, which drifts far less than a
//! rate on a shared machine) for votes pushed by the vote service's queue
//! without an idempotency key, with keys that get a marker key of their own
//! (a caller's random UUID v4), and with time-ordered keys whose markers
//! share hashes (UUID v7, what the retry layer makes;
//! `votemesh::queue::MarkerPlace`), next to Redis' own client in the
//! same run on the same redis-server: `redis-benchmark -t lpush -P 16 -d
//! 256`, a pipelined LPUSH of a vote's size (the floor of docs/BENCHMARKS.md).
//!
//! `cargo bench -p votemesh-vote --bench idempotency` (BENCH_SECONDS=N per
//! run, default 5). Also prints Redis' memory after each run: the markers
//! still alive.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{SubsecRound, Utc};
use uuid::Uuid;
use votemesh::{
    idempotency::{Idempotency, IdempotencyKey, repeat_window},
    queue::{NewVote, VoteSink, redis::RedisQueue},
};
use votemesh_testing::RedisServer;

/// Concurrent callers, as in docs/BENCHMARKS.md's CPU table.
const CONCURRENCY: u64 = 64;
/// The gateway's deadline for CastVote, which sizes its markers' window.
const GATEWAY_DEADLINE: Duration = Duration::from_secs(5);

/// Which idempotency key each vote is pushed with.
#[derive(Clone, Copy)]
enum Keys {
    None,
    /// A random UUID: its marker is a key of its own.
    OfTheirOwn,
    /// [`IdempotencyKey::generate`]'s: its marker a field of a shared hash.
    TimeOrdered,
}

fn vote(i: u64, keys: Keys) -> NewVote {
    let key = match keys {
        Keys::None => None,
        Keys::OfTheirOwn => Some(IdempotencyKey::parse(&Uuid::new_v4().to_string()).unwrap()),
        Keys::TimeOrdered => Some(IdempotencyKey::generate()),
    };
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: format!("voter-{i}"),
        option_id: if i.is_multiple_of(2) { "a" } else { "b" }.into(),
        cast_at: Utc::now().trunc_subsecs(6),
        trace_context: Default::default(),
        idempotency: key.map(|key| Idempotency {
            key,
            window: repeat_window(Some(GATEWAY_DEADLINE)),
        }),
    }
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc");
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Pushes for `seconds` from [`CONCURRENCY`] loops; votes pushed.
async fn push_for(queue: &RedisQueue, seconds: f64, keys: Keys) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (queue, done, stop) = (queue.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = worker << 32;
                while !stop.load(Ordering::Relaxed) {
                    queue.push(&vote(i, keys)).await.unwrap();
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

async fn used_memory(redis: &RedisServer) -> String {
    let info = redis.command(&["INFO", "memory"]).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5.0);
    let redis = RedisServer::start().await.expect("redis-server");
    let pid = redis.pid().expect("redis-server's pid");
    println!("| run | votes | Redis CPU per vote (µs) | Redis memory after |");
    println!("|---|---|---|---|");
    for (name, keys) in [
        ("pusher, no key", Keys::None),
        ("pusher, keys with a marker key each", Keys::OfTheirOwn),
        (
            "pusher, time-ordered keys (markers in hashes)",
            Keys::TimeOrdered,
        ),
    ] {
        redis.command(&["FLUSHALL"]).await.unwrap();
        let queue = RedisQueue::new(&redis.url()).unwrap();
        let before = cpu_seconds(pid);
        let votes = push_for(&queue, seconds, keys).await;
        let cpu = cpu_seconds(pid) - before;
        println!(
            "| {name} | {votes} | {:.2} | {} |",
            cpu * 1e6 / votes as f64,
            used_memory(&redis).await
        );
    }
    redis.command(&["FLUSHALL"]).await.unwrap();
    let requests = 1_000_000u64;
    let before = cpu_seconds(pid);
    let status = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port().to_string(),
            "-c",
            &CONCURRENCY.to_string(),
        ])
        .args([
            "-n",
            &requests.to_string(),
            "-t",
            "lpush",
            "-P",
            "16",
            "-d",
            "256",
            "-q",
        ])
        .output()
        .expect("redis-benchmark (apt-get install -y redis-tools)");
    assert!(status.status.success());
    let cpu = cpu_seconds(pid) - before;
    println!(
        "| redis-benchmark LPUSH -P 16 -d 256 (floor) | {requests} | {:.2} | {} |",
        cpu * 1e6 / requests as f64,
        used_memory(&redis).await
    );
}
