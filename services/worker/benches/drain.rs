//! Drain throughput and memory of the worker, batched against a reference.
//!
//! `cargo bench -p votemesh-worker --bench drain` (BENCH_VOTES=N to change
//! the size). For each configuration it starts a fresh redis-server and
//! PostgreSQL, queues the same N votes (a third of the voters vote twice),
//! runs the worker binary, and times it until the tally holds every voter;
//! then reads the worker's peak resident memory (VmHWM). The reference is
//! batch size 1: one transaction per vote, as the original voting app's
//! worker did. Both run in the same run on the same machine, so the ratio
//! is what to read; the absolute numbers depend on the machine (and the
//! harness runs PostgreSQL with fsync off, which flatters the reference).
//!
//! Then the same drain with the queue on a Redis Cluster of 3 primaries
//! and 3 replicas (the harness's), in 16 shards, one worker holding them
//! all, next to one Redis with the default batch: the worker's, Redis'
//! and PostgreSQL's CPU per drained vote, read from `/proc`, and the Redis
//! memory a queued vote takes (`used_memory` before and after queueing;
//! docs/SCALING.md).

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::EntityTrait;
use uuid::Uuid;
use votemesh::{
    config::QueueLayout,
    queue::{NewVote, VoteSink, redis::RedisQueue, shard::Shards},
    store::{self, entity::tally},
};
use votemesh_testing::{
    PostgresServer, RedisCluster, RedisServer,
    process::{cpu_seconds, cpu_seconds_with_children},
};

struct Outcome {
    batch_size: usize,
    seconds: f64,
    peak_rss_kib: u64,
    /// CPU seconds of the worker, of Redis (every node) and of PostgreSQL
    /// (postmaster and backends) during the drain.
    worker_cpu: f64,
    redis_cpu: f64,
    postgres_cpu: f64,
    /// Redis memory (every node) the queued votes took, in bytes.
    redis_queued_bytes: f64,
}

/// Where the queue is.
enum Queue {
    Single(Box<RedisServer>),
    Cluster(RedisCluster),
}

/// Shards of the cluster configuration.
const CLUSTER_SHARDS: u16 = 16;

impl Queue {
    fn producer(&self) -> RedisQueue {
        match self {
            Self::Single(redis) => RedisQueue::new(&redis.url()).unwrap(),
            Self::Cluster(cluster) => {
                let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
                RedisQueue::cluster(
                    &seeds,
                    QueueLayout {
                        shards: Shards::new(std::num::NonZeroU16::new(CLUSTER_SHARDS).unwrap()),
                        replica_acks: 0,
                    },
                )
                .unwrap()
            }
        }
    }

    fn worker_env(&self, command: &mut Command) {
        match self {
            Self::Single(redis) => {
                command.env("REDIS_URL", redis.url().expose());
            }
            Self::Cluster(cluster) => {
                command
                    .env("REDIS_CLUSTER_NODES", cluster.seeds())
                    .env("QUEUE_SHARDS", CLUSTER_SHARDS.to_string());
            }
        }
    }

    /// Redis' `used_memory`, summed over every node.
    async fn used_memory(&self) -> f64 {
        let nodes: Vec<u16> = match self {
            Self::Single(redis) => vec![redis.port()],
            Self::Cluster(cluster) => cluster.nodes().iter().map(RedisServer::port).collect(),
        };
        let mut total = 0.0;
        for port in nodes {
            let info = RedisServer::command_on(port, &["INFO", "memory"])
                .await
                .unwrap();
            total += info
                .lines()
                .find_map(|line| line.strip_prefix("used_memory:"))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        total
    }

    fn redis_cpu(&self) -> f64 {
        match self {
            Self::Single(redis) => redis.pid().map(cpu_seconds).unwrap_or(0.0),
            Self::Cluster(cluster) => cluster
                .nodes()
                .iter()
                .filter_map(RedisServer::pid)
                .map(cpu_seconds)
                .sum(),
        }
    }
}

async fn run(batch_size: usize, votes: usize) -> Outcome {
    let redis = RedisServer::start().await.expect("redis-server");
    drain(Queue::Single(Box::new(redis)), batch_size, votes).await
}

async fn drain(redis: Queue, batch_size: usize, votes: usize) -> Outcome {
    let postgres = PostgresServer::start().await.expect("postgres");
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();

    let queue = redis.producer();
    let memory_before = redis.used_memory().await;
    let voters = votes * 3 / 4;
    let mut pushes = Vec::new();
    for i in 0..votes {
        let queue = queue.clone();
        let voter = i % voters;
        pushes.push(tokio::spawn(async move {
            let vote = NewVote {
                vote_id: Uuid::new_v4(),
                voter_id: format!("voter-{voter}"),
                option_id: if i % 2 == 0 { "a" } else { "b" }.into(),
                cast_at: Utc::now(),
                trace_context: HashMap::new(),
                idempotency: None,
            };
            queue.push(&vote).await.unwrap();
        }));
        if pushes.len() >= 64 {
            for push in pushes.drain(..) {
                push.await.unwrap();
            }
        }
    }
    for push in pushes {
        push.await.unwrap();
    }

    // Replicas catch up before the memory is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redis_queued_bytes = redis.used_memory().await - memory_before;
    let started = Instant::now();
    let redis_before = redis.redis_cpu();
    let postgres_pid = postgres.pid().unwrap();
    let postgres_before = cpu_seconds_with_children(postgres_pid);
    let mut command = Command::new(env!("CARGO_BIN_EXE_votemesh-worker"));
    redis.worker_env(&mut command);
    let mut worker = command
        .env("DATABASE_URL", postgres.url().expose())
        .env("WORKER_ID", "bench")
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BATCH_SIZE", batch_size.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let counted: i64 = tally::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .iter()
            .map(|row| row.count)
            .sum();
        if counted == voters as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let worker_cpu = cpu_seconds(worker.id());
    let redis_cpu = redis.redis_cpu() - redis_before;
    let postgres_cpu = cpu_seconds_with_children(postgres_pid) - postgres_before;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", worker.id())).unwrap_or_default();
    let peak_rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let _ = worker.kill();
    let _ = worker.wait();
    Outcome {
        batch_size,
        seconds,
        peak_rss_kib,
        worker_cpu,
        redis_cpu,
        postgres_cpu,
        redis_queued_bytes,
    }
}

#[tokio::main]
async fn main() {
    let votes: usize = std::env::var("BENCH_VOTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    println!(
        "draining {votes} queued votes ({} voters) from Redis into PostgreSQL",
        votes * 3 / 4
    );
    println!(
        "{:>22} {:>9} {:>10} {:>14}",
        "worker", "seconds", "votes/s", "peak RSS (MiB)"
    );
    let mut results = Vec::new();
    for batch_size in [1, votemesh_worker::DEFAULT_BATCH_SIZE] {
        let outcome = run(batch_size, votes).await;
        let label = if batch_size == 1 {
            "batch 1 (reference)".to_owned()
        } else {
            format!("batch {batch_size}")
        };
        println!(
            "{label:>22} {:>9.2} {:>10.0} {:>14.1}",
            outcome.seconds,
            votes as f64 / outcome.seconds,
            outcome.peak_rss_kib as f64 / 1024.0
        );
        results.push(outcome);
    }
    if let [reference, batched] = &results[..] {
        println!(
            "batch {} drains {:.1}x faster than the reference",
            batched.batch_size,
            reference.seconds / batched.seconds
        );
    }

    println!();
    println!(
        "| queue | votes/s | worker µs per vote | Redis µs per vote (all nodes) | PostgreSQL µs per vote | Redis bytes per queued vote (all nodes) | peak worker RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let single = run(votemesh_worker::DEFAULT_BATCH_SIZE, votes).await;
    let cluster = RedisCluster::start(3, 1).await.expect("a Redis Cluster");
    let sharded = drain(
        Queue::Cluster(cluster),
        votemesh_worker::DEFAULT_BATCH_SIZE,
        votes,
    )
    .await;
    for (label, outcome) in [
        ("one Redis".to_owned(), &single),
        (
            format!("cluster, 3 primaries, {CLUSTER_SHARDS} shards"),
            &sharded,
        ),
    ] {
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} |",
            votes as f64 / outcome.seconds,
            outcome.worker_cpu * 1e6 / votes as f64,
            outcome.redis_cpu * 1e6 / votes as f64,
            outcome.postgres_cpu * 1e6 / votes as f64,
            outcome.redis_queued_bytes / votes as f64,
            outcome.peak_rss_kib as f64 / 1024.0,
        );
    }
}
