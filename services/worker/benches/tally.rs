//! The tally per (option, shard) against one row per option, with several
//! workers writing to one PostgreSQL at once.
//!
//! `cargo bench -p votemesh-worker --bench tally` (BENCH_VOTES=N, default
//! 200,000; BENCH_WRITERS=W, default 4; BENCH_BATCH=B, default 1,024). W
//! writers each apply batches of B new voters' votes (two options) through
//! the worker's own
//! `apply_batch`, all at once, into one fresh PostgreSQL (the harness's,
//! fsync off). Each writer's voters are in its own shards, as the shard
//! leases give them: writer `w` holds the shards `s` of 16 with
//! `s mod W = w`. Per option (`Shards::ONE`), every transaction moves the
//! same two rows; per shard (16), no two writers share a row. The two
//! layouts alternate, twice each, in the same run; the figures are the
//! wall time and PostgreSQL's CPU (postmaster and backends, from `/proc`)
//! per vote. docs/SCALING.md, "The tally per shard", has a recorded run.

use std::{
    collections::HashMap,
    num::NonZeroU16,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures_util::future::join_all;
use sea_orm::ConnectionTrait;
use uuid::Uuid;
use votemesh::{
    queue::{QueuedVote, shard::Shards},
    store,
};
use votemesh_testing::{PostgresServer, process::cpu_seconds_with_children};
use votemesh_worker::apply::apply_batch;

const SHARDS: u16 = 16;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// `count` voters whose shard (of [`SHARDS`]) is one writer `writer` of
/// `writers` holds, each voting once.
fn batches_of(writer: usize, writers: usize, count: usize, batch: usize) -> Vec<Vec<QueuedVote>> {
    let shards = Shards::new(NonZeroU16::new(SHARDS).unwrap());
    let mut votes = Vec::with_capacity(count);
    let mut n = 0_u64;
    while votes.len() < count {
        let voter_id = format!("w{writer}-voter-{n}");
        n += 1;
        if usize::from(shards.index_of(&voter_id)) % writers != writer {
            continue;
        }
        votes.push(QueuedVote {
            sequence: n as i64,
            vote_id: Uuid::new_v4(),
            voter_id,
            option_id: if n.is_multiple_of(2) { "a" } else { "b" }.into(),
            cast_at: Utc::now(),
            trace_context: HashMap::new(),
        });
    }
    votes.chunks(batch).map(<[QueuedVote]>::to_vec).collect()
}

struct Outcome {
    seconds: f64,
    postgres_cpu: f64,
}

async fn run(postgres: &PostgresServer, shards: Shards, work: &[Vec<Vec<QueuedVote>>]) -> Outcome {
    let db = store::connect(&postgres.url()).await.unwrap();
    db.execute_unprepared("TRUNCATE votes, tally")
        .await
        .unwrap();
    db.execute_unprepared("VACUUM ANALYZE").await.unwrap();
    let pid = postgres.pid().unwrap();
    let cpu_before = cpu_seconds_with_children(pid);
    let started = Instant::now();
    join_all(work.iter().map(|batches| {
        let db = db.clone();
        async move {
            for batch in batches {
                apply_batch(&db, batch, shards).await.unwrap();
            }
        }
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    db.close().await.unwrap();
    // The backends' CPU is counted once they have exited.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Outcome {
        seconds,
        postgres_cpu: cpu_seconds_with_children(pid) - cpu_before,
    }
}

#[tokio::main]
async fn main() {
    let votes = env_or("BENCH_VOTES", 200_000);
    let writers = env_or("BENCH_WRITERS", 4).clamp(1, usize::from(SHARDS));
    let batch = env_or("BENCH_BATCH", 1024).max(1);
    let postgres = PostgresServer::start().await.expect("postgres");
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    db.close().await.unwrap();
    let work: Vec<_> = (0..writers)
        .map(|writer| batches_of(writer, writers, votes / writers, batch))
        .collect();
    let total = work.iter().flatten().map(Vec::len).sum::<usize>();
    println!(
        "{total} new voters' votes, {writers} writers at once, batches of {batch}, one PostgreSQL"
    );
    println!(
        "{:>22} {:>9} {:>10} {:>22}",
        "tally", "seconds", "votes/s", "PostgreSQL µs per vote"
    );
    let per_shard = Shards::new(NonZeroU16::new(SHARDS).unwrap());
    for (name, shards) in [
        ("per option", Shards::ONE),
        ("per (option, shard)", per_shard),
        ("per option", Shards::ONE),
        ("per (option, shard)", per_shard),
    ] {
        let outcome = run(&postgres, shards, &work).await;
        println!(
            "{:>22} {:>9.2} {:>10.0} {:>22.2}",
            name,
            outcome.seconds,
            total as f64 / outcome.seconds,
            outcome.postgres_cpu * 1e6 / total as f64
        );
    }
}
