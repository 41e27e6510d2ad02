//! Bench (not a test): what the vote service's pusher costs Redis per
//! queued vote, at several concurrencies, next to the floor in the same
//! run on the same redis-server: `redis-benchmark -t lpush -P 16 -d 256`,
//! one `LPUSH` of a vote-sized message per request, pipelined (the
//! cheapest way to put one message on a list, per message).
//!
//! Redis' CPU time is read from `/proc` before and after each run; the
//! votes are counted on the list itself (`LLEN`), and the script calls in
//! `INFO commandstats`, so the table also says how many votes one call
//! carried: a call costs Redis about as much as its votes do, so the
//! batch size decides the cost per vote (docs/BENCHMARKS.md, "Redis per
//! queued vote").
//!
//! A second table runs the same pusher against a Redis Cluster of 3
//! primaries and 3 replicas (the test harness's), at each shard count and
//! replica acknowledgement, next to the single Redis of the first table:
//! what sharding and `WAIT` cost Redis per vote (docs/SCALING.md).
//!
//! `cargo bench -p votemesh-vote --bench push` (BENCH_SECONDS=N per figure,
//! default 3).

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bb8_redis::redis::{AsyncCommands, cluster::ClusterClient};
use chrono::Utc;
use uuid::Uuid;
use votemesh::{
    config::QueueLayout,
    queue::{NewVote, VoteSink, redis::RedisQueue, shard::Shards},
};
use votemesh_testing::{RedisCluster, RedisServer, process::cpu_seconds};

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

/// Runs `concurrency` loops of pushes for `seconds`.
async fn push_for(queue: RedisQueue, concurrency: usize, seconds: f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for worker in 0..concurrency as u64 {
        let (queue, stop) = (queue.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut i = worker << 32;
            while !stop.load(Ordering::Relaxed) {
                queue.push(&vote(i)).await.expect("push");
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.await.expect("push loop");
    }
}

/// What Redis did during one measured stretch.
struct Measured {
    /// Redis CPU, µs per message put on the list.
    micros_per_message: f64,
    /// Messages on the list.
    messages: u64,
    /// Calls of `command` (lower case, as `INFO commandstats` names it).
    calls: u64,
}

/// Runs `run` and measures Redis: `command` counts the calls, `list` is
/// where the messages went.
async fn measure(
    redis: &RedisServer,
    command: &str,
    list: &str,
    run: impl Future<Output = ()>,
) -> Measured {
    redis.command(&["FLUSHALL"]).await.unwrap();
    redis.command(&["CONFIG", "RESETSTAT"]).await.unwrap();
    let pid = redis.pid().expect("redis-server runs");
    let before = cpu_seconds(pid);
    run.await;
    let cpu = cpu_seconds(pid) - before;
    // Raw RESP: ":<n>\r\n".
    let messages: u64 = redis.command(&["LLEN", list]).await.unwrap()[1..]
        .trim()
        .parse()
        .unwrap();
    let stats = redis.command(&["INFO", "commandstats"]).await.unwrap();
    let calls = stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0);
    Measured {
        micros_per_message: cpu * 1e6 / messages.max(1) as f64,
        messages,
        calls,
    }
}

/// `redis-benchmark` pushing `requests` vote-sized messages, one `LPUSH`
/// each, 16 pipelined per connection, onto `mylist`.
fn redis_benchmark(port: u16, concurrency: usize, requests: u64) {
    let status = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &concurrency.to_string()])
        .args(["-n", &requests.to_string(), "-P", "16", "-d", "256"])
        .args(["-t", "lpush", "-q"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-benchmark (apt-get install -y redis-tools)");
    assert!(status.success(), "redis-benchmark failed");
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3.0);
    let redis = RedisServer::start().await.expect("redis-server");
    println!(
        "| concurrency | votes/s | votes per script call | Redis µs per vote | floor: LPUSH -P 16, Redis µs per message | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for concurrency in [1, 16, 64, 256] {
        let queue = RedisQueue::new(&redis.url()).unwrap();
        let pushed = measure(
            &redis,
            "evalsha",
            "votes",
            push_for(queue, concurrency, seconds),
        )
        .await;
        let (port, requests) = (redis.port(), pushed.messages.clamp(100_000, 2_000_000));
        let floor = measure(&redis, "lpush", "mylist", async {
            tokio::task::spawn_blocking(move || redis_benchmark(port, concurrency, requests))
                .await
                .unwrap()
        })
        .await;
        println!(
            "| {concurrency} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
            pushed.messages as f64 / seconds,
            pushed.messages as f64 / pushed.calls.max(1) as f64,
            pushed.micros_per_message,
            floor.micros_per_message,
            pushed.micros_per_message / floor.micros_per_message,
        );
    }
    cluster_table(seconds).await;
}

/// The pusher on a 3-primary cluster: Redis CPU per vote over all nodes
/// (primaries, and replicas apart), at 64 concurrent callers, for each
/// shard count and replica acknowledgement.
async fn cluster_table(seconds: f64) {
    let cluster = RedisCluster::start(3, 1).await.expect("a Redis Cluster");
    let seeds: Vec<String> = cluster.seeds().split(',').map(str::to_owned).collect();
    let client = ClusterClient::new(
        seeds
            .iter()
            .map(|seed| format!("redis://{seed}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut reader = client.get_async_connection().await.unwrap();
    println!();
    println!(
        "| cluster, c=64 | shards | replica acks | votes/s | primaries' µs per vote | replicas' µs per vote |"
    );
    println!("|---|---|---|---|---|---|");
    for (shards, replica_acks) in [(3, 0), (3, 1), (16, 1), (64, 0), (64, 1)] {
        let layout = QueueLayout {
            shards: Shards::new(std::num::NonZeroU16::new(shards).unwrap()),
            replica_acks,
        };
        for node in cluster.nodes() {
            let _ = node.command(&["FLUSHALL"]).await;
        }
        let topology = cluster.topology().await.unwrap();
        let cpu_of = |primary: bool| {
            topology
                .iter()
                .filter(|node| node.primary == primary)
                .filter_map(|node| {
                    cluster
                        .nodes()
                        .iter()
                        .find(|server| server.port() == node.port)
                        .and_then(RedisServer::pid)
                })
                .map(cpu_seconds)
                .sum::<f64>()
        };
        let (primaries_before, replicas_before) = (cpu_of(true), cpu_of(false));
        let queue = RedisQueue::cluster(&seeds, layout).unwrap();
        push_for(queue, 64, seconds).await;
        let (primaries, replicas) = (
            cpu_of(true) - primaries_before,
            cpu_of(false) - replicas_before,
        );
        let mut votes = 0u64;
        for shard in layout.shards.all() {
            votes += reader.llen::<_, u64>(shard.queue_key()).await.unwrap();
        }
        println!(
            "| | {shards} | {replica_acks} | {:.0} | {:.2} | {:.2} |",
            votes as f64 / seconds,
            primaries * 1e6 / votes.max(1) as f64,
            replicas * 1e6 / votes.max(1) as f64,
        );
        let _ = cluster.command(&["FLUSHALL"]).await;
    }
}
