//! The result service against a real PostgreSQL: answers from the tally
//! table, UNAVAILABLE while the database is down, and the binary's own
//! health check; its `/metrics` shows the tally's freshness and the read
//! failures.

use std::{net::SocketAddr, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::proto::v1::{GetResultsRequest, result_service_client::ResultServiceClient};
use votemesh_testing::{
    ANY_PORT, PostgresServer,
    metrics::{scrape, value},
    probe,
    process::run_health_check,
};
use votemesh_testing_services::start_result;

const WAIT: Duration = Duration::from_secs(30);
/// When the served tally was read (its age is the time since).
const FRESHNESS: &str = "votemesh_result_tally_read_timestamp_seconds";

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
    let metrics = scrape(addr).await.unwrap();
    let read_at = value(&metrics, FRESHNESS, &[]);
    assert!(
        read_at > 1.7e9,
        "the tally's read time, in Unix seconds: {read_at}"
    );
    let pool = |state| {
        value(
            &metrics,
            "votemesh_db_pool_connections",
            &[("state", state)],
        )
    };
    assert!(pool("idle") + pool("busy") >= 1.0, "the pool's connections");

    postgres.stop().await;
    // Once the feed's tally is older than two refresh intervals, GetResults
    // reads the database itself, and says it cannot.
    probe::wait_for("GetResults UNAVAILABLE", WAIT, || {
        let mut client = client.clone();
        async move {
            client
                .get_results(GetResultsRequest {})
                .await
                .is_err_and(|status| status.code() == Code::Unavailable)
        }
    })
    .await;
    probe::wait_for("readiness NOT_SERVING", WAIT, || async {
        probe::health(addr, votemesh_result::SERVICE_NAME).await == Ok(ServingStatus::NotServing)
    })
    .await;
    assert!(!binary_health_check(addr).await.status.success());
    // The failures are counted, and the served tally ages.
    let metrics = scrape(addr).await.unwrap();
    assert!(value(&metrics, "votemesh_result_tally_read_failures_total", &[]) >= 1.0);
    let last_read_while_down = value(&metrics, FRESHNESS, &[]);

    postgres.restart().await.unwrap();
    probe::wait_for("readiness SERVING again", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    probe::wait_for("a fresh tally again", WAIT, || async {
        value(&scrape(addr).await.unwrap(), FRESHNESS, &[]) > last_read_while_down
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
