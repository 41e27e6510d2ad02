//! Results are pushed, not polled: with the fallback poll set to a minute,
//! a vote the worker commits still reaches WatchResults (through the
//! worker's NOTIFY and the result service's LISTEN), also after PostgreSQL
//! restarted under the listener. Real redis-server and PostgreSQL.

use std::time::Duration;

use votemesh::proto::v1::{
    CastVoteRequest, GetResultsRequest, WatchResultsRequest,
    result_service_client::ResultServiceClient, vote_service_client::VoteServiceClient,
};
use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, TestServer};
use votemesh_testing_services::{
    cats_and_dogs, start_vote, start_worker, until_total, worker_settings,
};

/// Far longer than the test waits for a tally: only a push delivers it.
const POLL_INTERVAL: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

async fn start_result_polling_rarely(postgres: &PostgresServer) -> TestServer {
    let db = votemesh::store::connect(&postgres.url()).await.unwrap();
    votemesh::store::migrate(&db).await.unwrap();
    TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_result::run(listener, db, cats_and_dogs(), POLL_INTERVAL, shutdown)
    })
    .await
    .ready()
    .await
}

#[tokio::test]
async fn a_committed_vote_reaches_watch_results_without_waiting_for_the_poll() {
    let redis = RedisServer::start().await.unwrap();
    let mut postgres = PostgresServer::start().await.unwrap();
    let result = start_result_polling_rarely(&postgres).await;
    let vote = start_vote(&redis, ANY_PORT).await;
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let mut results =
        ResultServiceClient::new(votemesh::client::connect(result.addr).await.unwrap());
    let mut votes = VoteServiceClient::new(votemesh::client::connect(vote.addr).await.unwrap());
    let mut stream = results
        .watch_results(WatchResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    until_total(&mut stream, 0, WAIT).await;

    for (voter_id, total) in [("v1", 1), ("v2", 2)] {
        votes
            .cast_vote(CastVoteRequest {
                voter_id: voter_id.into(),
                option: "a".into(),
            })
            .await
            .unwrap();
        until_total(&mut stream, total, WAIT).await;
    }
    let tally = results
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tally.total, 2, "GetResults answers the latest tally");

    // The listener's connection dies with PostgreSQL; it comes back by
    // itself and pushes again.
    postgres.restart().await.unwrap();
    votes
        .cast_vote(CastVoteRequest {
            voter_id: "v3".into(),
            option: "b".into(),
        })
        .await
        .unwrap();
    until_total(&mut stream, 3, WAIT).await;

    worker.stop().await;
    vote.stop().await;
    result.stop().await;
}

/// The listener's connection is its own: while it listens, the database
/// pool that serves the reads has every connection free.
#[tokio::test]
async fn the_listener_holds_its_own_connection_not_a_slot_of_the_pool() {
    use sea_orm::ConnectionTrait;
    let postgres = PostgresServer::start().await.unwrap();
    let db = votemesh::store::connect(&postgres.url()).await.unwrap();
    votemesh::store::migrate(&db).await.unwrap();
    let served = db.clone();
    let result = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_result::run(listener, served, cats_and_dogs(), POLL_INTERVAL, shutdown)
    })
    .await
    .ready()
    .await;
    let listening = || async {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap() == 1
    };
    votemesh_testing::wait_for("the listener listening", WAIT, listening).await;
    // A connection returns to the pool just after its query: wait briefly.
    let pool = db.get_postgres_connection_pool();
    votemesh_testing::wait_for(
        "every pooled connection idle (none held by the listener)",
        Duration::from_secs(3),
        || async { pool.size() as usize == pool.num_idle() },
    )
    .await;
    result.stop().await;
}
