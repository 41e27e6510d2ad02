//! Vote-limit buckets behind proxies: `X-Forwarded-For` is believed only
//! from the proxies the operator names in `TRUSTED_PROXIES`. Two hops in
//! front of one gateway, each on its own loopback address:
//!
//! ```text
//! client 203.0.113.10 ─► trusted proxy 127.0.0.1 (XFF: 203.0.113.10) ─┐
//!                                                                       ├─► gateway
//! clients ─► SNAT hop 127.0.0.2, not named (XFF passed through) ────────┘
//! ```
//!
//! The client behind the trusted proxy is counted by its own address; the
//! SNAT hop is counted as one client, by its address, whatever
//! `X-Forwarded-For` its requests carry: it can neither spend the other
//! client's votes nor escape its own limit. (Behind an untrusted hop, every
//! client shares its bucket: docs/SECURITY.md says how to keep the real
//! client address on Kubernetes.)

mod support;

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use support::System;
use votemesh::shutdown::CancellationToken;
use votemesh_gateway::{
    AppState,
    edge::{Edge, EdgeArgs},
};
use votemesh_testing::{ANY_PORT, TestServer};

/// The trusted proxy's address (named in `TRUSTED_PROXIES`).
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The SNAT hop's address: loopback too (Linux routes all of 127/8 to
/// `lo`), but not named.
const SNAT_HOP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Votes per bucket, all at once.
const LIMIT: u32 = 3;

/// Casts one vote through `gateway` from a connection whose source address
/// is `from`, with `forwarded_for` as `X-Forwarded-For`; the status.
async fn vote_from(gateway: &TestServer, from: IpAddr, forwarded_for: &str) -> u16 {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let request = axum::http::Request::post(format!("http://{}/api/vote", gateway.addr))
        .header("content-type", "application/json")
        .header("x-forwarded-for", forwarded_for)
        .body(Full::new(Bytes::from_static(
            br#"{"option":"a","voter_id":"bucket-test"}"#,
        )))
        .unwrap();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|error| panic!("no answer to a vote from {from}: {error}"));
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// The statuses of `count` votes from `from` with `forwarded_for`.
async fn votes_from(
    gateway: &TestServer,
    from: IpAddr,
    forwarded_for: &str,
    count: u32,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(vote_from(gateway, from, forwarded_for).await);
    }
    statuses
}

#[tokio::test]
async fn a_client_behind_an_snat_hop_and_one_behind_the_trusted_proxy_get_their_own_buckets() {
    let system = System::start(false).await;
    let limits = EdgeArgs {
        vote_rate_limit: LIMIT,
        vote_rate_burst: Some(LIMIT),
        trusted_proxies: vec![PROXY.into()],
    };
    let (vote, result) = (system.vote_addr, system.result_addr);
    let gateway = TestServer::spawn(ANY_PORT, |listener, shutdown: CancellationToken| {
        let state = AppState::connect(
            &format!("http://{vote}"),
            &format!("http://{result}"),
            shutdown,
        )
        .unwrap()
        .with_edge(Edge::new(&limits));
        votemesh_gateway::serve(listener, state)
    })
    .await;
    let client = "203.0.113.10";

    // The hop's requests name the client behind the proxy; the hop is not
    // trusted, so they count against the hop's own address.
    assert_eq!(
        votes_from(&gateway, SNAT_HOP, client, LIMIT + 1).await,
        [200, 200, 200, 429],
        "the SNAT hop has a bucket of its own, and it runs out"
    );
    assert_eq!(
        votes_from(&gateway, PROXY, client, LIMIT + 1).await,
        [200, 200, 200, 429],
        "the client behind the trusted proxy still has its whole bucket"
    );
    assert_eq!(
        vote_from(&gateway, PROXY, "203.0.113.20").await,
        200,
        "another client behind the trusted proxy has its own bucket"
    );
    assert_eq!(
        vote_from(&gateway, SNAT_HOP, "198.51.100.7").await,
        429,
        "a new X-Forwarded-For through the untrusted hop gets no new bucket"
    );

    gateway.stop().await;
    system.stop().await;
}
