//! The worker's readiness has one writer, the probe: while Redis and
//! PostgreSQL answer their pings but every batch fails (here a trigger
//! makes PostgreSQL refuse each insert), readiness turns NOT_SERVING and
//! stays there, instead of flapping back to SERVING at every probe, and
//! it turns SERVING again once batches commit.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;
use votemesh::{
    queue::{NewVote, VoteSink, redis::RedisQueue},
    store,
};
use votemesh_testing::{PostgresServer, RedisServer, probe};
use votemesh_testing_services::{start_worker, worker_settings};

/// Bounds a hang; not a performance assertion.
const WAIT: Duration = Duration::from_secs(30);
/// Failed batches watched after readiness turned NOT_SERVING: with the
/// backoff of a worker under test (at most 300 ms) and its probe (every
/// 100 ms), several probes run between them.
const FAILURES_WATCHED: i64 = 6;

/// Makes every insert into `votes` fail, counting the attempts in a
/// sequence (which a rollback does not undo).
const REFUSE_VOTES: &str = r"
CREATE SEQUENCE refused_inserts;
CREATE FUNCTION refuse_vote() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('refused_inserts');
  RAISE EXCEPTION 'votes are refused by the test';
END $$;
CREATE TRIGGER refuse_vote BEFORE INSERT ON votes
  FOR EACH ROW EXECUTE FUNCTION refuse_vote();
";

async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.unwrap();
}

/// Inserts refused so far.
async fn refused(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM refused_inserts",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test]
async fn failing_batches_keep_readiness_not_serving_without_flapping() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    execute(&db, REFUSE_VOTES).await;

    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    probe::wait_for("worker ready", WAIT, || async {
        probe::health(worker.addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    let mut readiness = probe::watch_health(worker.addr, "").await.unwrap();
    probe::watch_until(&mut readiness, ServingStatus::Serving, WAIT).await;

    let queue = RedisQueue::new(&redis.url()).unwrap();
    queue
        .push(&NewVote {
            vote_id: Uuid::new_v4(),
            voter_id: "v1".into(),
            option_id: "a".into(),
            cast_at: Utc::now(),
            trace_context: HashMap::new(),
            idempotency: None,
        })
        .await
        .unwrap();
    probe::watch_until(&mut readiness, ServingStatus::NotServing, WAIT).await;

    // Batches keep failing while both pings pass: readiness stays put.
    let until = refused(&db).await + FAILURES_WATCHED;
    let watched = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                update = readiness.message() => {
                    let status = update.unwrap().expect("the Watch stream is open").status;
                    assert_ne!(
                        status,
                        ServingStatus::Serving as i32,
                        "readiness flapped to SERVING while batches fail"
                    );
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if refused(&db).await >= until {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(watched.is_ok(), "the worker stopped retrying its batch");

    // Once the database takes the batch, readiness comes back.
    execute(&db, "DROP TRIGGER refuse_vote ON votes").await;
    probe::watch_until(&mut readiness, ServingStatus::Serving, WAIT).await;
    assert_eq!(
        votemesh_testing::stored_tally(&db).await.unwrap(),
        [("a".to_owned(), 1)].into_iter().collect()
    );
    worker.stop().await;
}
