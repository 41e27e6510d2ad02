//! The gateway binary talking to the vote and result services over mutual
//! TLS (real TLS on loopback, certificates made in the test): a vote cast
//! through the gateway reaches Redis through vote, and the tally comes
//! back through result; an upstream without TLS is not reached.

mod support;

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, process::Command};
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{grpc::Listener, store, tls::Tls};
use votemesh_testing::{
    ANY_PORT, PostgresServer, RedisServer, TestServer, free_port, probe,
    tls::{MountedIdentity, TestCa},
    wait_for,
};
use votemesh_testing_services::{
    PROBE_INTERVAL, REFRESH_INTERVAL, cats_and_dogs, start_worker, worker_settings,
};

const WAIT: Duration = Duration::from_secs(30);

/// A listener with mutual TLS for a service under test, and its health
/// listener's address.
fn tls_listener(listener: TcpListener, tls: Tls, allowed: &[&str]) -> (Listener, SocketAddr) {
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    health.set_nonblocking(true).unwrap();
    let health_addr = health.local_addr().unwrap();
    let health = TcpListener::from_std(health).unwrap();
    let allowed = allowed.iter().map(|name| (*name).to_owned()).collect();
    (
        Listener::mutual_tls(listener, tls, allowed, health),
        health_addr,
    )
}

#[tokio::test]
async fn the_gateway_votes_and_reads_results_over_mutual_tls() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let mount = |name: &str, names: &[&str]| {
        MountedIdentity::write(&dir.path().join(name), &ca.issue(names), &ca.cert_pem)
    };
    let vote_identity = mount("vote", &["vote", "127.0.0.1"]);
    let result_identity = mount("result", &["result", "127.0.0.1"]);
    let gateway_identity = mount("gateway", &["gateway", "spiffe://votemesh/gateway"]);

    let queue = votemesh::queue::redis::RedisQueue::new(&redis.url()).unwrap();
    let vote_tls = Tls::load(vote_identity.files()).unwrap();
    let mut vote_health = None;
    let vote = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        let (listener, health) = tls_listener(listener, vote_tls, &["spiffe://votemesh/gateway"]);
        vote_health = Some(health);
        votemesh_vote::run(
            listener,
            queue,
            cats_and_dogs(),
            "vote-tls".into(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await;
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let result_tls = Tls::load(result_identity.files()).unwrap();
    let mut result_health = None;
    let result = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        let (listener, health) = tls_listener(listener, result_tls, &[]);
        result_health = Some(health);
        votemesh_result::run(listener, db, cats_and_dogs(), REFRESH_INTERVAL, shutdown)
    })
    .await;
    for health in [vote_health.unwrap(), result_health.unwrap()] {
        wait_for("service ready", WAIT, || async {
            probe::health(health, "").await == Ok(ServingStatus::Serving)
        })
        .await;
    }
    let worker = start_worker(&redis, &postgres, worker_settings("mtls")).await;

    let port = free_port().await.unwrap();
    let _gateway = Command::new(env!("CARGO_BIN_EXE_votemesh-gateway"))
        .env("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("GATEWAY_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("VOTE_ADDR", format!("https://{}", vote.addr))
        .env("RESULT_ADDR", format!("https://{}", result.addr))
        .env("RUST_LOG", "warn")
        .envs(gateway_identity.env())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    wait_for("gateway listening", WAIT, || {
        votemesh_testing::process::port_open(port)
    })
    .await;
    wait_for("gateway sees both services over mTLS", WAIT, || async {
        support::get(&url("/readyz"), &[]).await.json()["status"] == "ok"
    })
    .await;

    let cast = support::request(
        "POST",
        &url("/api/vote"),
        Some("application/json"),
        r#"{"option":"b","voter_id":"over-mtls"}"#,
        &[],
    )
    .await;
    assert_eq!(cast.status, 200, "{cast:?}");
    assert_eq!(cast.json()["served_by"], "vote-tls");
    wait_for(
        "the vote in the tally read through result",
        WAIT,
        || async { support::get(&url("/api/results"), &[]).await.json()["total"] == 1 },
    )
    .await;

    worker.stop().await;
    vote.stop().await;
    result.stop().await;
}
