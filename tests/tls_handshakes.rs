//! The TLS listener's cap on handshakes in progress: connections beyond
//! it wait until a handshake ends, and a failed handshake is counted.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use votemesh::tls::{Tls, server};
use votemesh_testing::{
    tls::{MountedIdentity, TestCa, der_of, server_certificate},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn handshakes_beyond_the_cap_wait_until_one_ends_and_failures_are_counted() {
    votemesh::metrics::install();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let server_identity = ca.issue(&["vote", "127.0.0.1"]);
    let server_tls = Tls::load(
        MountedIdentity::write(&dir.path().join("vote"), &server_identity, &ca.cert_pem).files(),
    )
    .unwrap();
    let client_tls = Tls::load(
        MountedIdentity::write(
            &dir.path().join("gateway"),
            &ca.issue(&["gateway"]),
            &ca.cert_pem,
        )
        .files(),
    )
    .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = server::incoming_with_limit(listener, Some(server_tls), 2);
    // The server side: keep every handshaken connection open.
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Some(connection) = incoming.next().await {
            open.push(connection);
        }
    });

    // Two connections that never say a word hold both handshake slots.
    let idle = TcpStream::connect(addr).await.unwrap();
    let _idle_too = TcpStream::connect(addr).await.unwrap();
    let mut handshake = tokio::spawn({
        let client_tls = client_tls.clone();
        async move { server_certificate(addr, &client_tls, "vote").await }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut handshake)
            .await
            .is_err(),
        "a third handshake must wait while two are in progress"
    );

    // One idle connection goes away: its handshake fails (counted), and
    // the waiting client is served.
    drop(idle);
    let presented = tokio::time::timeout(WAIT, handshake)
        .await
        .expect("the waiting handshake completes once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(presented, der_of(&server_identity.cert_pem));
    wait_for("the failed handshake is counted", WAIT, || async {
        votemesh::metrics::render().lines().any(|line| {
            line.starts_with("votemesh_tls_handshake_failures_total{reason=\"refused\"} ")
        })
    })
    .await;
}
