//! The result service over several PostgreSQL primaries (`DB_HOSTS`): it
//! answers and streams the sum of their tallies, woken by each database's
//! notifications, and refuses databases given in another order than they
//! were set up with. Real PostgreSQL servers, started by the harness.

use std::{num::NonZeroU16, time::Duration};

use sea_orm::ConnectionTrait;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use votemesh::{
    proto::v1::{
        GetResultsRequest, Tally, WatchResultsRequest, result_service_client::ResultServiceClient,
    },
    queue::shard::Shards,
    shutdown::CancellationToken,
    store::Databases,
};
use votemesh_testing::{ANY_PORT, PostgresServer, TestServer};
use votemesh_testing_services::{cats_and_dogs, until_total};

/// Far longer than the test waits for a tally: only a notification
/// delivers it.
const POLL_INTERVAL: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

async fn databases(servers: &[&PostgresServer]) -> Databases {
    let urls: Vec<_> = servers.iter().map(|server| server.url()).collect();
    Databases::connect(&urls, None).await.unwrap()
}

/// What a worker's commit does to one database: move a tally row of a
/// shard, and notify, in one transaction.
async fn commit_tally(databases: &Databases, index: usize, option: &str, shard: u16, count: i64) {
    databases
        .get(index)
        .unwrap()
        .execute_unprepared(&format!(
            "BEGIN; \
             INSERT INTO tally (option_id, shard, count) VALUES ('{option}', {shard}, {count}) \
             ON CONFLICT (option_id, shard) DO UPDATE SET count = tally.count + excluded.count; \
             NOTIFY {}; COMMIT",
            votemesh::store::TALLY_CHANNEL
        ))
        .await
        .unwrap();
}

fn counts(tally: &Tally) -> Vec<(String, i64)> {
    tally
        .options
        .iter()
        .map(|option| (option.id.clone(), option.count))
        .collect()
}

#[tokio::test]
async fn the_tally_is_the_sum_of_every_database_pushed_by_each_ones_commits() {
    let (first, second) = (
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
    );
    let pair = databases(&[&first, &second]).await;
    pair.migrate(Shards::new(NonZeroU16::new(4).unwrap()))
        .await
        .unwrap();
    let served = pair.clone();
    let result = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_result::run(listener, served, cats_and_dogs(), POLL_INTERVAL, shutdown)
    })
    .await
    .ready()
    .await;
    let mut results =
        ResultServiceClient::new(votemesh::client::connect(result.addr).await.unwrap());
    let mut stream = results
        .watch_results(WatchResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    until_total(&mut stream, 0, WAIT).await;

    // Shards 2 and 3 are the second database's; 0 and 1 the first's.
    commit_tally(&pair, 1, "a", 3, 2).await;
    until_total(&mut stream, 2, WAIT).await;
    commit_tally(&pair, 0, "b", 0, 1).await;
    commit_tally(&pair, 0, "a", 1, 1).await;
    let tally = until_total(&mut stream, 4, WAIT).await;
    assert_eq!(counts(&tally), [("a".into(), 3), ("b".into(), 1)]);
    // A voter who changed from a to b in shard 2: two rows of one database.
    commit_tally(&pair, 1, "a", 2, -1).await;
    commit_tally(&pair, 1, "b", 2, 1).await;
    let tally = tokio::time::timeout(WAIT, async {
        loop {
            let tally = stream.next().await.unwrap().unwrap();
            if counts(&tally) == [("a".into(), 2), ("b".into(), 2)] {
                return tally;
            }
        }
    })
    .await
    .expect("the change reaches the stream");
    assert_eq!(tally.total, 4);
    let answered = results
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts(&answered),
        counts(&tally),
        "GetResults sums the same"
    );
    result.stop().await;
}

#[tokio::test]
async fn databases_given_in_another_order_are_refused() {
    let (first, second) = (
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
    );
    databases(&[&first, &second])
        .await
        .migrate(Shards::new(NonZeroU16::new(4).unwrap()))
        .await
        .unwrap();
    let swapped = databases(&[&second, &first]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::time::timeout(
        WAIT,
        votemesh_result::run(
            listener,
            swapped,
            cats_and_dogs(),
            Duration::from_millis(50),
            shutdown.clone(),
        ),
    )
    .await
    .expect("the service stops by itself");
    let error = served.expect_err("the service refuses to serve");
    assert!(
        error.to_string().contains("tally poller"),
        "it stops because the tally reader refused: {error}"
    );
}
