//! The result service against a real PostgreSQL: answers from the tally
//! table, UNAVAILABLE while the database is down, and the binary's own
//! health check.

use std::{net::SocketAddr, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::proto::v1::{GetResultsRequest, result_service_client::ResultServiceClient};
use votemesh_testing::{
    PostgresServer, probe,
    process::run_health_check,
    services::{ANY_PORT, start_result},
};

const WAIT: Duration = Duration::from_secs(30);

/// `votemesh-result --health-check` against the service on `addr`: what Docker's
/// HEALTHCHECK runs in the image.
async fn binary_health_check(addr: SocketAddr) -> std::process::Output {
    run_health_check(env!("CARGO_BIN_EXE_votemesh-result"), addr).await
}

#[tokio::test]
async fn database_down_is_unavailable_and_not_ready_and_comes_back() {
    let mut postgres = PostgresServer::start().await.unwrap();
    let service = start_result(&postgres, ANY_PORT).await;
    let addr = service.addr;
    let mut client = ResultServiceClient::new(votemesh::client::connect(addr).await.unwrap());
    let tally = client
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tally.total, 0);
    assert_eq!(tally.options.len(), 2);
    assert!(binary_health_check(addr).await.status.success());

    postgres.stop().await;
    let status = client.get_results(GetResultsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    probe::wait_for("readiness NOT_SERVING", WAIT, || async {
        probe::health(addr, votemesh_result::SERVICE_NAME).await == Ok(ServingStatus::NotServing)
    })
    .await;
    assert!(!binary_health_check(addr).await.status.success());

    postgres.restart().await.unwrap();
    probe::wait_for("readiness SERVING again", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    assert_eq!(
        client
            .get_results(GetResultsRequest {})
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    service.stop().await;
}

#[tokio::test]
async fn tally_read_failures_are_a_warning_per_outage_and_so_is_the_recovery() {
    use tracing::Level;
    // A current-thread test: the poller task logs to this capture.
    let (logs, _guard) = votemesh_testing::logs::capture();
    let mut postgres = PostgresServer::start().await.unwrap();
    let db = votemesh::store::connect(&postgres.url()).await.unwrap();
    votemesh::store::migrate(&db).await.unwrap();
    let (health, _health_service) = votemesh::health::Health::new(&["test"]).await;
    let shutdown = votemesh::shutdown::CancellationToken::new();
    let (_feed, poller) = votemesh_result::feed::spawn(
        db,
        votemesh_testing::services::cats_and_dogs(),
        Duration::from_millis(50),
        health.clone(),
        shutdown.clone(),
    );
    for outage in 1..=2 {
        probe::wait_for("the tally reads", WAIT, || async { health.is_ready() }).await;
        postgres.stop().await;
        // Reads fail (readiness says so), again and again.
        probe::wait_for("a failed read", WAIT, || async { !health.is_ready() }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        postgres.restart().await.unwrap();
        probe::wait_for("the recovery logged", WAIT, || async {
            logs.count(Level::WARN, "the tally reads again") == outage
        })
        .await;
    }
    shutdown.cancel();
    poller.await.unwrap();
    let warnings: Vec<String> = logs
        .own(Level::WARN)
        .into_iter()
        .map(|event| event.message)
        .filter(|message| !message.contains("readiness"))
        .collect();
    assert_eq!(
        logs.count(Level::WARN, "cannot read the tally"),
        2,
        "{warnings:?}"
    );
    assert_eq!(
        warnings.len(),
        4,
        "one warning when it fails, one when it recovers, per outage: {warnings:?}"
    );
}
