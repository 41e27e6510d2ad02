//! The worker against real redis-server and PostgreSQL processes: exact
//! counts, replays, dead letters, crashes and outages.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;
use votemesh::{
    proto::v1::{GetStatsRequest, WorkerStats, worker_service_client::WorkerServiceClient},
    queue::{
        DEAD_LETTER_KEY, NewVote, QUEUE_KEY, QueuedVote, VoteSink, VoteSource, redis::RedisQueue,
        shard::Shards,
    },
    shutdown::CancellationToken,
    store::{self, entity::vote},
};
use votemesh_testing::{PostgresServer, RedisServer, probe, process::run_health_check};
use votemesh_testing_services::{start_worker, worker_settings};
use votemesh_worker::{DrainSettings, apply::apply_batch};

const WAIT: Duration = Duration::from_secs(30);

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

async fn database(postgres: &PostgresServer) -> DatabaseConnection {
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    db
}

/// The tally table as a map, without zero rows.
async fn tally_of(db: &DatabaseConnection) -> BTreeMap<String, i64> {
    votemesh_testing::stored_tally(db).await.unwrap()
}

/// What the votes table says the tally should be.
async fn recount(db: &DatabaseConnection) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for row in vote::Entity::find().all(db).await.unwrap() {
        *counts.entry(row.option_id).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()
}

async fn wait_for_tally(db: &DatabaseConnection, expected: &BTreeMap<String, i64>) {
    probe::wait_for(&format!("tally {expected:?}"), WAIT, || async {
        &tally_of(db).await == expected
    })
    .await;
}

/// What the worker serving at `addr` answers to GetStats.
async fn stats_of(addr: std::net::SocketAddr) -> WorkerStats {
    let mut client = WorkerServiceClient::new(votemesh::client::connect(addr).await.unwrap());
    client
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn many_voters_with_changes_are_counted_exactly_by_two_workers() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();

    // 300 voters vote "a"; every third then changes to "b"; every fifth of
    // those changes back to "a". Last vote wins.
    let mut expected = BTreeMap::<String, i64>::new();
    for voter in 0..300 {
        let id = format!("voter-{voter}");
        queue.push(&new_vote(&id, "a")).await.unwrap();
        let mut last = "a";
        if voter % 3 == 0 {
            queue.push(&new_vote(&id, "b")).await.unwrap();
            last = "b";
            if voter % 5 == 0 {
                queue.push(&new_vote(&id, "a")).await.unwrap();
                last = "a";
            }
        }
        *expected.entry(last.to_owned()).or_default() += 1;
    }
    let first = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let second = start_worker(&redis, &postgres, worker_settings("w2")).await;
    wait_for_tally(&db, &expected).await;
    assert_eq!(
        recount(&db).await,
        expected,
        "the tally is in step with the votes"
    );

    let stats = stats_of(first.addr).await;
    assert_eq!(stats.worker_id, "w1");
    assert_eq!(stats.queue_depth, 0);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn an_older_vote_never_overwrites_a_newer_one_and_replays_change_nothing() {
    let postgres = PostgresServer::start().await.unwrap();
    last_vote_wins(&database(&postgres).await).await;
    // The all-in-one run's SQLite takes the same steps' other form.
    let dir = tempfile::tempdir().unwrap();
    let url = votemesh::config::ConnectionUrl::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("votes.sqlite").display()
    ));
    let sqlite = store::connect(&url).await.unwrap();
    store::migrate(&sqlite).await.unwrap();
    last_vote_wins(&sqlite).await;
}

/// The tally moves in the rows of each voter's shard: a change of vote
/// moves one count from one option to the other within the voter's shard,
/// and the sums per option are the counts of the votes.
#[tokio::test]
async fn the_tally_is_kept_per_option_and_voters_shard() {
    let postgres = PostgresServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = store::connect(&votemesh::config::ConnectionUrl::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("votes.sqlite").display()
    )))
    .await
    .unwrap();
    store::migrate(&sqlite).await.unwrap();
    let shards = Shards::new(std::num::NonZeroU16::new(4).unwrap());
    for db in [database(&postgres).await, sqlite] {
        let voters: Vec<String> = (0..40).map(|n| format!("voter-{n}")).collect();
        let first: Vec<QueuedVote> = voters
            .iter()
            .map(|voter| QueuedVote::stamped(&new_vote(voter, "a"), 1))
            .collect();
        apply_batch(&db, &first, shards).await.unwrap();
        // Every third voter changes to b.
        let changes: Vec<QueuedVote> = voters
            .iter()
            .step_by(3)
            .map(|voter| QueuedVote::stamped(&new_vote(voter, "b"), 2))
            .collect();
        apply_batch(&db, &changes, shards).await.unwrap();

        let mut expected = std::collections::BTreeMap::<(String, i32), i64>::new();
        for (n, voter) in voters.iter().enumerate() {
            let option = if n % 3 == 0 { "b" } else { "a" };
            *expected
                .entry((option.into(), i32::from(shards.index_of(voter))))
                .or_default() += 1;
        }
        let stored: std::collections::BTreeMap<(String, i32), i64> =
            votemesh::store::entity::tally::Entity::find()
                .all(&db)
                .await
                .unwrap()
                .into_iter()
                .filter(|row| row.count != 0)
                .map(|row| ((row.option_id, row.shard), row.count))
                .collect();
        assert_eq!(stored, expected);
        assert!(expected.len() > 4, "the voters span several shards");
    }
}

/// Older votes, replays, and two votes of one voter in one batch, on `db`.
async fn last_vote_wins(db: &DatabaseConnection) {
    let newer = QueuedVote::stamped(&new_vote("v1", "b"), 20);
    let older = QueuedVote::stamped(&new_vote("v1", "a"), 10);

    let applied = apply_batch(db, std::slice::from_ref(&newer), Shards::ONE)
        .await
        .unwrap();
    assert_eq!(applied.inserted, 1);
    let applied = apply_batch(db, std::slice::from_ref(&older), Shards::ONE)
        .await
        .unwrap();
    assert_eq!(applied.superseded, 1);
    assert_eq!(tally_of(db).await, counts(&[("b", 1)]));

    // A batch replayed after a crash between commit and acknowledgement.
    let batch = [
        QueuedVote::stamped(&new_vote("v2", "a"), 5),
        QueuedVote::stamped(&new_vote("v1", "a"), 30),
    ];
    apply_batch(db, &batch, Shards::ONE).await.unwrap();
    apply_batch(db, &batch, Shards::ONE).await.unwrap();
    assert_eq!(tally_of(db).await, counts(&[("a", 2)]));
    assert_eq!(recount(db).await, counts(&[("a", 2)]));

    // Inside one batch, order does not matter either.
    let batch = [
        QueuedVote::stamped(&new_vote("v3", "b"), 9),
        QueuedVote::stamped(&new_vote("v3", "a"), 8),
    ];
    apply_batch(db, &batch, Shards::ONE).await.unwrap();
    assert_eq!(tally_of(db).await, counts(&[("a", 2), ("b", 1)]));
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_list_and_the_votes_around_it_count() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    queue.push(&new_vote("before", "a")).await.unwrap();
    redis
        .command(&["LPUSH", QUEUE_KEY, "this is not a vote"])
        .await
        .unwrap();
    redis
        .command(&[
            "LPUSH",
            QUEUE_KEY,
            r#"{"sequence":1,"voter_id":"","option":"a"}"#,
        ])
        .await
        .unwrap();
    queue.push(&new_vote("after", "b")).await.unwrap();

    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    wait_for_tally(&db, &counts(&[("a", 1), ("b", 1)])).await;
    probe::wait_for("two dead letters", WAIT, || async {
        redis
            .command(&["LLEN", DEAD_LETTER_KEY])
            .await
            .unwrap()
            .starts_with(":2")
    })
    .await;
    let dead = redis
        .command(&["LRANGE", DEAD_LETTER_KEY, "0", "-1"])
        .await
        .unwrap();
    assert!(dead.contains("this is not a vote"), "{dead}");
    assert_eq!(stats_of(worker.addr).await.dead_lettered, 2);
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_that_died_holding_a_batch_loses_nothing() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    for voter in 0..30 {
        queue
            .push(&new_vote(
                &format!("v{voter}"),
                if voter < 10 { "a" } else { "b" },
            ))
            .await
            .unwrap();
    }
    // "crashed" takes a batch into its processing list and dies before
    // committing; "orphaned" does the same and never comes back.
    let crashed = queue.for_worker("crashed");
    assert_eq!(
        crashed.take_batch(12, Duration::ZERO).await.unwrap().len(),
        12
    );
    drop(crashed);
    let orphaned = queue.for_worker("orphaned");
    assert_eq!(
        orphaned.take_batch(8, Duration::ZERO).await.unwrap().len(),
        8
    );
    drop(orphaned);
    assert!(
        redis
            .command(&["LLEN", QUEUE_KEY])
            .await
            .unwrap()
            .starts_with(":10")
    );

    // The crashed worker restarts under its own id and finishes its batch;
    // the orphaned batch is reclaimed since its worker has no heartbeat.
    let restarted = start_worker(&redis, &postgres, worker_settings("crashed")).await;
    wait_for_tally(&db, &counts(&[("a", 10), ("b", 20)])).await;
    let processing = redis
        .command(&["KEYS", "votes:processing:*"])
        .await
        .unwrap();
    assert!(
        processing.starts_with("*0"),
        "no batch left behind: {processing}"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn postgres_down_stalls_the_worker_without_loss_and_it_resumes_by_itself() {
    let redis = RedisServer::start().await.unwrap();
    let mut postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    queue.push(&new_vote("v1", "a")).await.unwrap();
    wait_for_tally(&db, &counts(&[("a", 1)])).await;
    probe::wait_for("worker ready", WAIT, || async {
        probe::health(worker.addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;

    postgres.stop().await;
    for voter in 2..=20 {
        queue
            .push(&new_vote(&format!("v{voter}"), "b"))
            .await
            .unwrap();
    }
    probe::wait_for("worker NOT_SERVING", WAIT, || async {
        probe::health(worker.addr, votemesh_worker::SERVICE_NAME).await
            == Ok(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(
        probe::health(worker.addr, "liveness").await,
        Ok(ServingStatus::Serving)
    );

    postgres.restart().await.unwrap();
    let db = database(&postgres).await;
    wait_for_tally(&db, &counts(&[("a", 1), ("b", 19)])).await;
    probe::wait_for("worker SERVING again", WAIT, || async {
        probe::health(worker.addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn redis_restart_stalls_the_worker_and_it_resumes_by_itself() {
    let mut redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    redis.stop().await;
    probe::wait_for("worker NOT_SERVING", WAIT, || async {
        probe::health(worker.addr, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    redis.restart().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    queue.push(&new_vote("v1", "b")).await.unwrap();
    wait_for_tally(&db, &counts(&[("b", 1)])).await;
    worker.stop().await;
}

#[tokio::test]
async fn migrations_are_safe_when_several_workers_start_at_once() {
    let postgres = PostgresServer::start().await.unwrap();
    let db = Arc::new(store::connect(&postgres.url()).await.unwrap());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = postgres.url();
        tasks.push(tokio::spawn(async move {
            let db = store::connect(&url).await.unwrap();
            store::migrate(&db).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(tally_of(&db).await.is_empty());
}

/// The worker binary, with the test's Redis and PostgreSQL.
fn worker_process(
    redis: &RedisServer,
    postgres: &PostgresServer,
    worker_id: &str,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_votemesh-worker"))
        .env("REDIS_URL", redis.url().expose())
        .env("DATABASE_URL", postgres.url().expose())
        .env("WORKER_ID", worker_id)
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BATCH_SIZE", "25")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn kill_9_of_the_worker_process_while_draining_loses_and_doubles_nothing() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let mut expected = BTreeMap::<String, i64>::new();
    for voter in 0..1500 {
        let id = format!("v{voter}");
        queue.push(&new_vote(&id, "a")).await.unwrap();
        let last = if voter % 2 == 0 {
            queue.push(&new_vote(&id, "b")).await.unwrap();
            "b"
        } else {
            "a"
        };
        *expected.entry(last.to_owned()).or_default() += 1;
    }

    let mut worker = worker_process(&redis, &postgres, "k9");
    probe::wait_for("some batches committed", WAIT, || async {
        tally_of(&db).await.values().sum::<i64>() > 0
    })
    .await;
    worker.kill().unwrap(); // SIGKILL: no chance to finish anything
    worker.wait().unwrap();
    let left = redis.command(&["LLEN", QUEUE_KEY]).await.unwrap();
    assert!(
        !left.starts_with(":0"),
        "the kill came before the queue was drained: {left}"
    );

    let mut restarted = worker_process(&redis, &postgres, "k9");
    wait_for_tally(&db, &expected).await;
    assert_eq!(recount(&db).await, expected);

    // SIGTERM: a graceful stop, exit code 0.
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &restarted.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = tokio::task::spawn_blocking(move || restarted.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the worker with exit 0: {status}"
    );
}

#[tokio::test]
async fn the_binary_health_check_follows_readiness() {
    let redis = RedisServer::start().await.unwrap();
    let mut postgres = PostgresServer::start().await.unwrap();
    let worker = start_worker(&redis, &postgres, worker_settings("hc")).await;
    let addr = worker.addr;
    let check = || run_health_check(env!("CARGO_BIN_EXE_votemesh-worker"), addr);
    probe::wait_for("worker ready", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    assert!(check().await.status.success());
    postgres.stop().await;
    probe::wait_for("worker NOT_SERVING", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    assert!(!check().await.status.success());
    worker.stop().await;
}

#[tokio::test]
async fn with_the_in_process_queue_shutdown_drains_every_queued_vote_first() {
    use votemesh::queue::memory::MemoryQueue;
    for finish_queue in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let url = votemesh::config::ConnectionUrl::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("votes.sqlite").display()
        ));
        let db = store::connect(&url).await.unwrap();
        let queue = MemoryQueue::new();
        for voter in 0..700 {
            queue
                .push(&new_vote(&format!("v{voter}"), "a"))
                .await
                .unwrap();
        }
        let mut settings = DrainSettings::new("memory");
        settings.batch_size = 50;
        settings.finish_queue_on_shutdown = finish_queue;
        let shutdown = CancellationToken::new();
        shutdown.cancel(); // the stop comes before the worker took anything
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        votemesh_worker::run(listener, queue.clone(), db.clone(), settings, shutdown)
            .await
            .unwrap();
        let counted = tally_of(&db).await.values().sum::<i64>();
        if finish_queue {
            assert_eq!(
                counted, 700,
                "every queued vote counted before the worker stopped"
            );
            assert_eq!(queue.backlog().await.unwrap().depth, 0);
        } else {
            assert_eq!(
                counted, 0,
                "without it, votes wait in the queue for the next worker"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_move_that_lands_late_is_part_of_the_next_batch_not_lost() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let source = queue.for_worker("late");
    let processing = votemesh::queue::processing_key("late");
    // A BLMOVE the client gave up on (past its response timeout) is still
    // blocked in Redis, and moves a vote when one arrives.
    let abandoned = {
        let url = redis.port();
        let processing = processing.clone();
        tokio::spawn(async move {
            RedisServer::command_on(
                url,
                &["BLMOVE", QUEUE_KEY, &processing, "RIGHT", "LEFT", "5"],
            )
            .await
            .unwrap()
        })
    };
    redis.wait_for_blocked_clients(1).await.unwrap();
    // The worker's own BLMOVE waits behind it: v1 goes to the first, v2
    // to the second.
    // A take's blocking wait is short (300 ms); on a busy machine it may
    // end before the votes arrive, and the worker takes again, as its
    // drain loop does. Each take returns the whole processing list, so
    // once both votes are there, so is the batch.
    let take = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let batch = source.take_batch(10, Duration::from_millis(300)).await;
            if batch.as_ref().map_or(true, |batch| batch.len() >= 2)
                || tokio::time::Instant::now() >= deadline
            {
                return batch;
            }
        }
    });
    redis.wait_for_blocked_clients(2).await.unwrap();
    queue.push(&new_vote("v1", "a")).await.unwrap();
    queue.push(&new_vote("v2", "b")).await.unwrap();
    abandoned.await.unwrap();
    let batch = take.await.unwrap().unwrap();
    assert_eq!(
        batch.len(),
        2,
        "the batch is the whole processing list: {batch:?}"
    );
    let source = queue.for_worker("late");
    assert_eq!(source.ack_batch(&batch, &[]).await.unwrap(), 2);
    assert!(
        redis
            .command(&["LLEN", &processing])
            .await
            .unwrap()
            .starts_with(":0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_move_into_a_reclaimed_list_survives_the_acknowledgement_and_counts() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    queue.push(&new_vote("v1", "a")).await.unwrap();
    queue.push(&new_vote("v2", "b")).await.unwrap();

    // The slow worker takes v1 and v2 and starts committing them.
    let slow = queue.for_worker("slow");
    let batch = slow.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch.len(), 2);
    // Meanwhile its heartbeat lapses: a peer returns its batch to the queue,
    // takes it, commits it and acknowledges it.
    let peer = queue.for_worker("peer");
    assert_eq!(peer.reclaim_orphans().await.unwrap(), 2);
    let peer_batch = peer.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(peer_batch.len(), 2);
    let votes: Vec<QueuedVote> = peer_batch
        .iter()
        .map(|message| QueuedVote::parse(message).unwrap())
        .collect();
    apply_batch(&db, &votes, Shards::ONE).await.unwrap();
    assert_eq!(peer.ack_batch(&peer_batch, &[]).await.unwrap(), 2);
    // An earlier blocking move of the slow worker (its client gave up
    // waiting, Redis did not) lands the next vote, v3, in its list.
    let slow_list = votemesh::queue::processing_key("slow");
    let abandoned = {
        let (port, slow_list) = (redis.port(), slow_list.clone());
        tokio::spawn(async move {
            RedisServer::command_on(
                port,
                &["BLMOVE", QUEUE_KEY, &slow_list, "RIGHT", "LEFT", "5"],
            )
            .await
            .unwrap()
        })
    };
    redis.wait_for_blocked_clients(1).await.unwrap();
    queue.push(&new_vote("v3", "a")).await.unwrap();
    assert!(abandoned.await.unwrap().contains("v3"));

    // The slow worker's commit of v1 and v2 finishes; it acknowledges them.
    let votes: Vec<QueuedVote> = batch
        .iter()
        .map(|message| QueuedVote::parse(message).unwrap())
        .collect();
    apply_batch(&db, &votes, Shards::ONE).await.unwrap();
    assert_eq!(
        slow.ack_batch(&batch, &[]).await.unwrap(),
        0,
        "v1 and v2 left its list with the reclaim"
    );
    let left = redis
        .command(&["LRANGE", &slow_list, "0", "-1"])
        .await
        .unwrap();
    assert!(
        left.contains("v3"),
        "the late vote survives the ack: {left}"
    );

    // The slow worker goes on (here: starts again under its id) and counts v3.
    let worker = start_worker(&redis, &postgres, worker_settings("slow")).await;
    wait_for_tally(&db, &counts(&[("a", 2), ("b", 1)])).await;
    assert_eq!(recount(&db).await, counts(&[("a", 2), ("b", 1)]));
    worker.stop().await;
}

#[tokio::test]
async fn the_acknowledgement_moves_only_the_dead_letters_it_removed() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let source = queue.for_worker("dl");
    queue.push(&new_vote("v1", "a")).await.unwrap();
    redis
        .command(&["LPUSH", QUEUE_KEY, "not a vote"])
        .await
        .unwrap();
    let batch = source.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch.len(), 2);
    let dead = vec!["not a vote".to_owned()];
    assert_eq!(source.ack_batch(&batch, &dead).await.unwrap(), 2);
    assert_eq!(
        source.ack_batch(&batch, &dead).await.unwrap(),
        0,
        "acknowledging again removes nothing more"
    );
    let dead_letters = redis
        .command(&["LRANGE", DEAD_LETTER_KEY, "0", "-1"])
        .await
        .unwrap();
    assert_eq!(
        dead_letters.matches("not a vote").count(),
        1,
        "{dead_letters}"
    );
}

#[tokio::test]
async fn batches_larger_than_one_push_move_whole_in_order_and_leave_by_count() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let source = queue.for_worker("bulk");
    let processing = votemesh::queue::processing_key("bulk");
    let llen = |key: String| {
        let redis = &redis;
        async move { redis.command(&["LLEN", &key]).await.unwrap() }
    };
    // 2,500 messages, m0 the oldest (at the consuming end): more than the
    // scripts push in one LPUSH (1,000).
    let names: Vec<String> = (0..2500).map(|n| format!("m{n}")).collect();
    let mut push = vec!["LPUSH", QUEUE_KEY];
    push.extend(names.iter().map(String::as_str));
    redis.command(&push).await.unwrap();
    let newest_first = |range: std::ops::Range<usize>| -> Vec<String> {
        names[range].iter().rev().cloned().collect()
    };

    // As LMOVE RIGHT LEFT one by one would: the oldest first into the
    // list, so both takes return their messages newest first.
    let written = source.take_batch(1500, Duration::ZERO).await.unwrap();
    assert_eq!(written, newest_first(0..1500));
    let next = source.take_next(5000).await.unwrap();
    assert_eq!(next, newest_first(1500..2500));
    assert_eq!(llen(QUEUE_KEY.to_owned()).await, ":0\r\n");

    // The first batch sits whole at the list's end: it leaves alone.
    assert_eq!(source.ack_batch(&written, &[]).await.unwrap(), 1500);
    assert_eq!(llen(processing.clone()).await, ":1000\r\n");
    let retaken = source.take_batch(10_000, Duration::ZERO).await.unwrap();
    assert_eq!(retaken, next, "what is left is the next batch, in order");
    assert_eq!(source.ack_batch(&next, &[]).await.unwrap(), 1000);
    assert_eq!(llen(processing).await, ":0\r\n");
}

#[tokio::test]
async fn an_acknowledgement_that_does_not_find_its_batch_at_the_end_removes_only_its_own() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let source = queue.for_worker("moved");
    let processing = votemesh::queue::processing_key("moved");
    redis
        .command(&["LPUSH", QUEUE_KEY, "m0", "m1"])
        .await
        .unwrap();
    let batch = source.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch, ["m1", "m0"]);
    // Meanwhile a peer reclaimed the list, and other messages came in (a
    // late move, a retake): the list is as long as the batch, but m1 is
    // gone and m0 is not at the end.
    redis.command(&["DEL", &processing]).await.unwrap();
    redis
        .command(&["RPUSH", &processing, "m0", "x"])
        .await
        .unwrap();
    assert_eq!(
        source.ack_batch(&batch, &[]).await.unwrap(),
        1,
        "m0 only: m1 is no longer there"
    );
    let left = redis
        .command(&["LRANGE", &processing, "0", "-1"])
        .await
        .unwrap();
    assert_eq!(left, "*1\r\n$1\r\nx\r\n", "x is not part of the batch");
}

#[tokio::test]
async fn the_next_batch_waits_beside_the_one_being_written_and_a_failure_leaves_both() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let source = queue.for_worker("pipelined");
    for voter in 0..5 {
        queue
            .push(&new_vote(&format!("v{voter}"), "a"))
            .await
            .unwrap();
    }
    let processing = votemesh::queue::processing_key("pipelined");
    let held = || async {
        redis
            .command(&["LRANGE", &processing, "0", "-1"])
            .await
            .unwrap()
    };

    let written = source.take_batch(2, Duration::ZERO).await.unwrap();
    let next = source.take_next(2).await.unwrap();
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|message| !written.contains(message)));
    // Newest first, as the list holds them (and as take_batch returns
    // them): the acknowledgement then finds each at the list's tail.
    let sequence = |message: &String| QueuedVote::parse(message).unwrap().sequence;
    assert!(sequence(&next[0]) > sequence(&next[1]));
    assert!(sequence(&next[1]) > sequence(&written[0]));

    // Writing the first batch removes it alone.
    assert_eq!(source.ack_batch(&written, &[]).await.unwrap(), 2);
    let after_ack = held().await;
    assert!(
        next.iter()
            .all(|message| after_ack.contains(message.as_str()))
    );
    assert!(
        written
            .iter()
            .all(|message| !after_ack.contains(message.as_str()))
    );

    // The next one is not written (the database failed): the worker's next
    // take_batch returns it whole, topped up.
    let retried = source.take_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(retried.len(), 3);
    assert!(next.iter().all(|message| retried.contains(message)));
    assert!(
        source.take_next(10).await.unwrap().is_empty(),
        "nothing left"
    );
}

#[tokio::test]
async fn database_errors_are_sorted_by_sqlstate_not_by_their_words() {
    use sea_orm::ConnectionTrait;
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let transient = |sql: &'static str| {
        let db = db.clone();
        async move {
            let error = db.execute_unprepared(sql).await.unwrap_err();
            (store::is_transient(&error), error.to_string())
        }
    };
    // Errors in the query, whatever words they hold.
    for sql in [
        "SELECT * FROM connection_timeout",
        "DO $$ BEGIN RAISE EXCEPTION 'deadlock: connection terminating'; END $$",
    ] {
        let (is_transient, error) = transient(sql).await;
        assert!(!is_transient, "{error}");
    }
    // A deadlock and a connection the server ended, whatever their words.
    for sql in [
        "DO $$ BEGIN RAISE EXCEPTION 'no reason' USING ERRCODE = '40P01'; END $$",
        "SELECT pg_terminate_backend(pg_backend_pid())",
    ] {
        let (is_transient, error) = transient(sql).await;
        assert!(is_transient, "{error}");
    }
}

#[tokio::test]
async fn a_voter_another_worker_inserts_meanwhile_is_counted_once_without_a_retry() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use votemesh_worker::apply::Applied;
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;

    // Another worker's transaction inserts voter x (and counts it), not
    // committed yet.
    let other = db.begin().await.unwrap();
    apply_batch_in(&other, "x", "a", 1).await;

    // This worker's batch has a newer vote of x: its upsert waits for the
    // other transaction's insert, then updates the row it committed.
    let newer = QueuedVote::stamped(&new_vote("x", "b"), 2);
    let applying = tokio::spawn({
        let db = db.clone();
        let newer = newer.clone();
        async move { apply_batch(&db, std::slice::from_ref(&newer), Shards::ONE).await }
    });
    probe::wait_for("the upsert waits for the other insert", WAIT, || async {
        let waiting = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) AS n FROM pg_locks WHERE NOT granted",
            ))
            .await
            .unwrap()
            .unwrap();
        waiting.try_get::<i64>("", "n").unwrap() > 0
    })
    .await;
    other.commit().await.unwrap();

    // It learnt the option it replaced from the row itself: the count
    // moves from a to b, once.
    let applied = applying.await.unwrap().unwrap();
    assert_eq!(
        applied,
        Applied {
            updated: 1,
            ..Applied::default()
        }
    );
    assert_eq!(tally_of(&db).await, counts(&[("b", 1)]));
    assert_eq!(recount(&db).await, counts(&[("b", 1)]));
}

/// Inserts a vote and counts it inside `transaction`, as another worker's
/// uncommitted batch would.
async fn apply_batch_in(
    transaction: &sea_orm::DatabaseTransaction,
    voter: &str,
    option: &str,
    sequence: i64,
) {
    use sea_orm::ConnectionTrait;
    transaction
        .execute_unprepared(&format!(
            "INSERT INTO votes (voter_id, option_id, vote_id, sequence, cast_at, counted_at) \
             VALUES ('{voter}', '{option}', '{}', {sequence}, now(), now()); \
             INSERT INTO tally (option_id, shard, count) VALUES ('{option}', 0, 1) \
             ON CONFLICT (option_id, shard) DO UPDATE SET count = tally.count + 1",
            Uuid::new_v4()
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_steady_trickle_is_written_in_few_batches_while_the_worker_lingers() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = database(&postgres).await;
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let mut settings = worker_settings("w-linger");
    settings.linger = Duration::from_millis(100);
    let worker = start_worker(&redis, &postgres, settings).await;

    // 200 new voters, one every 2 ms: the worker keeps up, so without the
    // linger each take would find only the votes of its last write, a few
    // milliseconds' worth (a hundred batches or more).
    for voter in 0..200 {
        queue
            .push(&new_vote(&format!("trickle-{voter}"), "a"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for_tally(&db, &counts(&[("a", 200)])).await;

    let stats = stats_of(worker.addr).await;
    // About 400 ms of votes in batches of at most 50 (the test settings'
    // size), one take per 100 ms linger: a handful, with room for a slow
    // machine.
    assert!(
        stats.batches_committed <= 20,
        "{} batches for 200 votes trickling over 400 ms",
        stats.batches_committed
    );
    worker.stop().await;
}
