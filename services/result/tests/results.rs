//! The result service against a real PostgreSQL: answers from the tally
//! table, UNAVAILABLE while the database is down, and the binary's own
//! health check.

use std::{net::SocketAddr, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::PollArgs,
    proto::v1::{GetResultsRequest, result_service_client::ResultServiceClient},
    store,
    testing::{PostgresServer, TestServer, probe},
};

const WAIT: Duration = Duration::from_secs(30);

/// A result service over `postgres` on a free port, ready.
async fn start(postgres: &PostgresServer) -> TestServer {
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    TestServer::spawn("127.0.0.1:0".parse().unwrap(), |listener, shutdown| {
        votemesh_result::run(
            listener,
            db,
            PollArgs::default().poll().unwrap(),
            Duration::from_millis(50),
            shutdown,
        )
    })
    .await
    .ready()
    .await
}

fn binary_health_check(addr: SocketAddr) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_votemesh-result"))
        .args(["--health-check", "--listen", &addr.to_string()])
        .output()
        .unwrap()
}

#[tokio::test]
async fn database_down_is_unavailable_and_not_ready_and_comes_back() {
    let mut postgres = PostgresServer::start().unwrap();
    let service = start(&postgres).await;
    let addr = service.addr;
    let mut client = ResultServiceClient::new(probe::channel(addr).await.unwrap());
    let tally = client
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tally.total, 0);
    assert_eq!(tally.options.len(), 2);
    assert!(
        tokio::task::spawn_blocking(move || binary_health_check(addr))
            .await
            .unwrap()
            .status
            .success()
    );

    postgres.stop();
    let status = client.get_results(GetResultsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    probe::wait_for("readiness NOT_SERVING", WAIT, || async {
        probe::health(addr, votemesh_result::SERVICE_NAME).await == Ok(ServingStatus::NotServing)
    })
    .await;
    assert!(
        !tokio::task::spawn_blocking(move || binary_health_check(addr))
            .await
            .unwrap()
            .status
            .success()
    );

    postgres.restart().unwrap();
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
