//! Workers sharing the shards of a queue on a Redis Cluster (3 primaries,
//! 3 replicas, started by the harness): worker processes (the binary, with
//! `REDIS_CLUSTER_NODES` and `QUEUE_SHARDS`) divide the shards through
//! leases, counts come out exact with each voter's last acknowledged vote
//! (also over two PostgreSQL primaries, `DB_HOSTS`, each holding the voters
//! of its shards), and a worker killed with SIGKILL has its shards and its
//! in-flight batch taken over. A worker given the databases in another
//! order than they were set up with refuses to start.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    num::NonZeroU16,
    process::{Command, Stdio},
    time::Duration,
};

use chrono::Utc;
use futures_util::future::join_all;
use sea_orm::{DatabaseConnection, EntityTrait};
use uuid::Uuid;
use votemesh::{
    config::QueueLayout,
    queue::{NewVote, VoteSink, redis::RedisQueue, shard::Shards},
    store::{
        self,
        entity::{shard_map, vote},
    },
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
    worker_process_with(
        cluster,
        ("DATABASE_URL", postgres.url().expose()),
        worker_id,
    )
}

/// The worker binary on the cluster and several databases, in order.
fn worker_process_on(
    cluster: &RedisCluster,
    databases: &[&PostgresServer],
    worker_id: &str,
) -> Worker {
    worker_process_with(cluster, ("DB_HOSTS", &db_hosts(databases)), worker_id)
}

/// `DB_HOSTS` for `databases`, in order.
fn db_hosts(databases: &[&PostgresServer]) -> String {
    databases
        .iter()
        .map(|server| format!("127.0.0.1:{}", server.port()))
        .collect::<Vec<_>>()
        .join(",")
}

fn worker_command(cluster: &RedisCluster, database: (&str, &str), worker_id: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_votemesh-worker"));
    command
        .env("REDIS_CLUSTER_NODES", cluster.seeds())
        .env("QUEUE_SHARDS", SHARDS.to_string())
        .env(database.0, database.1)
        .env("WORKER_ID", worker_id)
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BATCH_SIZE", "25")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    command
}

fn worker_process_with(cluster: &RedisCluster, database: (&str, &str), worker_id: &str) -> Worker {
    Worker(
        worker_command(cluster, database, worker_id)
            .spawn()
            .unwrap(),
    )
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
async fn three_workers_share_the_shards_over_two_databases_and_count_each_voters_last_vote_once() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    let (first, second) = (
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
    );
    let _workers = ["w1", "w2", "w3"].map(|id| worker_process_on(&cluster, &[&first, &second], id));
    wait_for_holders(&cluster, &["w1", "w2", "w3"]).await;

    let producers = [producer(&cluster), producer(&cluster)];
    let expected = cast(&producers, 600).await;
    // Shards 0-3 are the first database's, 4-7 the second's: each holds
    // exactly the voters of its shards, and counts them.
    let mut expected_in = [BTreeMap::new(), BTreeMap::new()];
    for (voter, option) in &expected {
        let database = usize::from(shards().index_of(voter) >= SHARDS / 2);
        expected_in[database].insert(voter.clone(), option.clone());
    }
    assert!(expected_in.iter().all(|voters| voters.len() > 200));
    for (server, expected) in [&first, &second].into_iter().zip(&expected_in) {
        let db = store::connect(&server.url()).await.unwrap();
        wait_until_counted(&db, expected).await;
    }
}

#[tokio::test]
async fn a_worker_given_the_databases_in_another_order_refuses_to_start() {
    let cluster = RedisCluster::start(3, 0).await.unwrap();
    let (first, second) = (
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
    );
    {
        // A worker sets the databases up: each records its place.
        let _set_up = worker_process_on(&cluster, &[&first, &second], "set-up");
        for server in [&first, &second] {
            let db = store::connect(&server.url()).await.unwrap();
            probe::wait_for("the database's shard map recorded", WAIT, || async {
                shard_map::Entity::find_by_id(0)
                    .one(&db)
                    .await
                    .is_ok_and(|row| row.is_some())
            })
            .await;
        }
    }
    let mut swapped = tokio::process::Command::from(worker_command(
        &cluster,
        ("DB_HOSTS", &db_hosts(&[&second, &first])),
        "swapped",
    ));
    let output = tokio::time::timeout(
        WAIT,
        swapped
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the worker stops by itself")
    .unwrap();
    let logged = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{logged}");
    assert!(
        [
            "was set up as database 0 of 2",
            "was set up as database 1 of 2"
        ]
        .iter()
        .any(|recorded| logged.contains(recorded))
            && logged.contains("but this process was given it as database"),
        "the error says which database is out of place: {logged}"
    );
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
