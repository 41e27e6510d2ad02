//! The result service binary over a TLS-only PostgreSQL with
//! `sslmode=verify-full`, against a real PostgreSQL and certificates made
//! in the test: it reads the tally over a verified connection.

use std::{net::SocketAddr, time::Duration};

use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    proto::v1::{GetResultsRequest, result_service_client::ResultServiceClient},
    store,
};
use votemesh_testing::{
    PostgresServer, free_port, probe,
    tls::{MountedIdentity, TestCa},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_result_binary_reads_the_tally_over_verify_full() {
    let ca = TestCa::new("votemesh test CA");
    let postgres = PostgresServer::start_tls(&ca.issue(&["localhost", "127.0.0.1"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let identity = MountedIdentity::write(
        &dir.path().join("result"),
        &ca.issue(&["result"]),
        &ca.cert_pem,
    );
    let database_url = postgres.verify_full_url(&identity.files().ca);
    let db = store::connect(&database_url).await.unwrap();
    store::migrate(&db).await.unwrap();

    let addr: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let _result = Command::new(env!("CARGO_BIN_EXE_votemesh-result"))
        .env("RESULT_LISTEN_ADDR", addr.to_string())
        .env("DATABASE_URL", database_url.expose())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("result ready over verify-full", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    let results = ResultServiceClient::new(votemesh::client::connect(addr).await.unwrap())
        .get_results(GetResultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.total, 0);
    assert_eq!(results.options.len(), 2);
}
