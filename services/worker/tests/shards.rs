//! Workers sharing the shards of a queue on a Redis Cluster (3 primaries,
//! 3 replicas, started by the harness): worker processes (the binary, with
//! `REDIS_CLUSTER_NODES` and `QUEUE_SHARDS`) divide the shards through
//! leases, counts come out exact with each voter's last acknowledged vote,
//! and a worker killed with SIGKILL has its shards and its in-flight batch
//! taken over.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    num::NonZeroU16,
    time::Duration,
};

use chrono::Utc;
use futures_util::future::join_all;
use sea_orm::{DatabaseConnection, EntityTrait};
use uuid::Uuid;
use votemesh::{
    config::QueueLayout,
    queue::{NewVote, VoteSink, redis::RedisQueue, shard::Shards},
    store::{self, entity::vote},
};
use votemesh_testing::{PostgresServer, RedisCluster, probe};

/// Takeover within MEMBER_TTL + LEASE_RENEW_INTERVAL, drained after it.
const WAIT: Duration = Duration::from_secs(60);
const SHARDS: u16 = 8;

fn shards() -> Shards {
    Shards::new(NonZeroU16::new(SHARDS).unwrap())
}

fn new_vote(voter: &str, option: &str) -> NewVote {
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: voter.into(),
        option_id: option.into(),
        cast_at: Utc::now(),
        trace_context: HashMap::new(),
        idempotency: None,
    }
}

fn seeds(cluster: &RedisCluster) -> Vec<String> {
    cluster.seeds().split(',').map(str::to_owned).collect()
}

/// A vote service's queue on the cluster, without replica
/// acknowledgement (tests/queue_cluster.rs tests that; here a replica slow
/// to confirm on a busy machine would only refuse votes).
fn producer(cluster: &RedisCluster) -> RedisQueue {
    RedisQueue::cluster(
        &seeds(cluster),
        QueueLayout {
            shards: shards(),
            replica_acks: 0,
        },
    )
    .unwrap()
}

/// A worker process, killed (SIGKILL) when dropped, so a failing test
/// leaves none behind.
struct Worker(std::process::Child);

impl Worker {
    /// SIGKILL: no hand-over, no acknowledgement.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The worker binary on the cluster and `postgres`.
fn worker_process(cluster: &RedisCluster, postgres: &PostgresServer, worker_id: &str) -> Worker {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_votemesh-worker"))
        .env("REDIS_CLUSTER_NODES", cluster.seeds())
        .env("QUEUE_SHARDS", SHARDS.to_string())
        .env("DATABASE_URL", postgres.url().expose())
        .env("WORKER_ID", worker_id)
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BATCH_SIZE", "25")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Worker(child)
}

async fn database(postgres: &PostgresServer) -> DatabaseConnection {
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    db
}

/// Each voter's option in the votes table.
async fn stored_votes(db: &DatabaseConnection) -> BTreeMap<String, String> {
    vote::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.voter_id, row.option_id))
        .collect()
}

/// Waits until the votes table holds each voter's `expected` option, then
/// checks the tally counts exactly those.
async fn wait_until_counted(db: &DatabaseConnection, expected: &BTreeMap<String, String>) {
    probe::wait_for("every vote written", WAIT, || async {
        &stored_votes(db).await == expected
    })
    .await;
    let mut tally = BTreeMap::<String, i64>::new();
    for option in expected.values() {
        *tally.entry(option.clone()).or_default() += 1;
    }
    assert_eq!(votemesh_testing::stored_tally(db).await.unwrap(), tally);
}

/// Who holds each shard's lease (`None`: nobody).
async fn lease_holders(cluster: &RedisCluster) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for shard in shards().all() {
        let key = shard.lease_key();
        let reply = cluster.command_for_key(&key, &["GET", &key]).await.unwrap();
        // Raw RESP: "$<n>\r\n<holder>\r\n", or "$-1\r\n".
        holders.push(reply.lines().nth(1).map(str::to_owned));
    }
    holders
}

/// Waits until the leases of all shards are held by exactly `workers`.
async fn wait_for_holders(cluster: &RedisCluster, workers: &[&str]) {
    let expected: BTreeSet<String> = workers.iter().map(|&worker| worker.to_owned()).collect();
    probe::wait_for(&format!("shards held by {workers:?}"), WAIT, || async {
        let holders = lease_holders(cluster).await;
        holders.iter().all(Option::is_some)
            && holders.into_iter().flatten().collect::<BTreeSet<_>>() == expected
    })
    .await;
}

/// Each of `voters` votes `a`, then every other one changes to `b`, pushed
/// through two vote services' queues at once. Returns each voter's last
/// acknowledged option.
async fn cast(producers: &[RedisQueue], voters: usize) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    for round in ["a", "b"] {
        let votes: Vec<(usize, NewVote)> = (0..voters)
            .filter(|n| round == "a" || n % 2 == 0)
            .map(|n| (n, new_vote(&format!("voter-{n}"), round)))
            .collect();
        let pushes = votes
            .iter()
            .map(|(n, vote)| producers[n % producers.len()].push(vote));
        for queued in join_all(pushes).await {
            let queued = queued.unwrap();
            last.insert(queued.voter_id, queued.option_id);
        }
    }
    last
}

#[tokio::test]
async fn three_workers_share_the_shards_and_each_voters_last_vote_is_counted_once() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let _workers = ["w1", "w2", "w3"].map(|id| worker_process(&cluster, &postgres, id));
    wait_for_holders(&cluster, &["w1", "w2", "w3"]).await;

    let producers = [producer(&cluster), producer(&cluster)];
    let expected = cast(&producers, 600).await;
    wait_until_counted(&db, &expected).await;
}

#[tokio::test]
async fn a_killed_workers_shards_and_batch_are_taken_over_and_the_backlog_drains() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let mut doomed = worker_process(&cluster, &postgres, "doomed");
    let _survivor = worker_process(&cluster, &postgres, "survivor");
    wait_for_holders(&cluster, &["doomed", "survivor"]).await;

    let producers = [producer(&cluster)];
    let expected = cast(&producers, 3000).await;
    probe::wait_for("some votes written", WAIT, || async {
        !stored_votes(&db).await.is_empty()
    })
    .await;
    doomed.kill();
    assert_ne!(
        stored_votes(&db).await,
        expected,
        "the kill came after the backlog was drained"
    );

    wait_for_holders(&cluster, &["survivor"]).await;
    wait_until_counted(&db, &expected).await;
}

#[tokio::test]
async fn a_worker_that_joins_gets_its_share_without_a_restart_of_the_others() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let _first = worker_process(&cluster, &postgres, "first");
    wait_for_holders(&cluster, &["first"]).await;

    let _second = worker_process(&cluster, &postgres, "second");
    wait_for_holders(&cluster, &["first", "second"]).await;
    let producers = [producer(&cluster)];
    let expected = cast(&producers, 400).await;
    wait_until_counted(&db, &expected).await;
}
