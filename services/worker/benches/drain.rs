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

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::EntityTrait;
use uuid::Uuid;
use votemesh::{
    queue::{NewVote, VoteSink, redis::RedisQueue},
    store::{self, entity::tally},
};
use votemesh_testing::{PostgresServer, RedisServer};

struct Outcome {
    batch_size: usize,
    seconds: f64,
    peak_rss_kib: u64,
}

async fn run(batch_size: usize, votes: usize) -> Outcome {
    let redis = RedisServer::start().await.expect("redis-server");
    let postgres = PostgresServer::start().await.expect("postgres");
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();

    let queue = RedisQueue::new(&redis.url()).unwrap();
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

    let started = Instant::now();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_votemesh-worker"))
        .env("REDIS_URL", redis.url().expose())
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
}
