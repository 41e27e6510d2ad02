//! `/metrics` as Prometheus reads it, on the gateway and on a gRPC
//! server's own port, against the real services: the text parses, and the
//! counters and histograms moved by exactly the requests made, one whose
//! browser left before its answer included. One test in its own binary:
//! the registry is per process.

mod support;

use support::{System, WAIT, get, request};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use votemesh_testing::{
    metrics::{parse, scrape, value},
    probe::wait_for,
};

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn counters_move_by_exactly_the_requests_made() {
    let system = System::start(true).await;
    for voter in 0..3 {
        let body = format!(r#"{{"option":"a","voter_id":"m{voter}"}}"#);
        let answer = request("POST", &system.url("/api/vote"), JSON, body, &[]).await;
        assert_eq!(answer.status, 200);
    }
    for _ in 0..2 {
        let answer = request(
            "POST",
            &system.url("/api/vote"),
            JSON,
            r#"{"option":"zebra"}"#,
            &[],
        )
        .await;
        assert_eq!(answer.status, 400);
    }
    for _ in 0..4 {
        assert_eq!(get(&system.url("/api/results"), &[]).await.status, 200);
    }
    // A made-up method counts as `_OTHER`: a client cannot add series.
    for method in ["FROBNICATE", "BREW"] {
        let answer = request(method, &system.url("/api/vote"), None, "", &[]).await;
        assert_eq!(answer.status, 405, "{method}");
    }

    // /metrics is the operator port's alone: the public port has no such
    // route, so a public route to it cannot publish the metrics.
    assert_eq!(get(&system.url("/metrics"), &[]).await.status, 404);
    let admin = support::start_gateway_admin(system.vote_addr, system.result_addr).await;
    let admin_metrics = format!("http://{}/metrics", admin.addr);
    let gateway = get(&admin_metrics, &[]).await;
    assert_eq!(gateway.status, 200);
    assert!(
        gateway
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        gateway.header("content-type")
    );
    let metrics = parse(&gateway.body).unwrap();
    let vote = [("http_request_method", "POST"), ("http_route", "/api/vote")];
    assert_eq!(
        value(
            &metrics,
            "http_server_requests_total",
            &[vote[0], vote[1], ("http_response_status_code", "200")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            "http_server_requests_total",
            &[vote[0], vote[1], ("http_response_status_code", "400")]
        ),
        2.0
    );
    assert_eq!(
        value(&metrics, "http_server_request_duration_seconds", &vote),
        5.0
    );
    let results = [
        ("http_request_method", "GET"),
        ("http_route", "/api/results"),
    ];
    assert_eq!(
        value(&metrics, "http_server_request_duration_seconds", &results),
        4.0
    );
    let other = [
        ("http_request_method", "_OTHER"),
        ("http_route", "/api/vote"),
    ];
    assert_eq!(
        value(
            &metrics,
            "http_server_requests_total",
            &[other[0], other[1], ("http_response_status_code", "405")]
        ),
        2.0
    );
    assert_eq!(value(&metrics, "http_server_active_requests", &vote), 0.0);
    let cast = [
        ("rpc_service", "votemesh.v1.VoteService"),
        ("rpc_method", "CastVote"),
    ];
    assert_eq!(
        value(
            &metrics,
            "rpc_client_requests_total",
            &[cast[0], cast[1], ("rpc_grpc_status_code", "0")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            "rpc_client_requests_total",
            &[cast[0], cast[1], ("rpc_grpc_status_code", "3")]
        ),
        2.0,
        "INVALID_ARGUMENT"
    );
    assert_eq!(value(&metrics, "rpc_client_active_requests", &cast), 0.0);

    // The vote service answers /metrics on its gRPC port, over HTTP/1.1.
    let served = scrape(system.vote_addr).await.unwrap();
    assert_eq!(
        value(
            &served,
            "rpc_server_requests_total",
            &[cast[0], cast[1], ("rpc_grpc_status_code", "0")]
        ),
        3.0
    );
    assert_eq!(value(&served, "rpc_server_duration_seconds", &cast), 5.0);
    // The vote path: accepted, and refused by reason.
    assert_eq!(value(&served, "votemesh_votes_accepted_total", &[]), 3.0);
    assert_eq!(
        value(
            &served,
            "votemesh_votes_rejected_total",
            &[("reason", "unknown_option")]
        ),
        2.0
    );

    // A browser that leaves while its vote waits on a frozen Redis: the
    // request counts with 499 (client closed request) and leaves nothing
    // in flight, and the gateway's call for it counts as CANCELLED.
    system.redis.freeze();
    let gateway_metrics = || async { parse(&get(&admin_metrics, &[]).await.body).unwrap() };
    let mut browser = TcpStream::connect(system.gateway.addr).await.unwrap();
    let body = r#"{"option":"a","voter_id":"leaves"}"#;
    let head = format!(
        "POST /api/vote HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        system.gateway.addr,
        body.len()
    );
    browser
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    wait_for("the vote in flight", WAIT, || async {
        value(
            &gateway_metrics().await,
            "http_server_active_requests",
            &vote,
        ) == 1.0
    })
    .await;
    drop(browser);
    wait_for("no vote in flight once the browser left", WAIT, || async {
        value(
            &gateway_metrics().await,
            "http_server_active_requests",
            &vote,
        ) == 0.0
    })
    .await;
    let metrics = gateway_metrics().await;
    assert_eq!(
        value(
            &metrics,
            "http_server_requests_total",
            &[vote[0], vote[1], ("http_response_status_code", "499")]
        ),
        1.0
    );
    assert_eq!(
        value(&metrics, "http_server_request_duration_seconds", &vote),
        6.0
    );
    assert_eq!(
        value(
            &metrics,
            "rpc_client_requests_total",
            &[cast[0], cast[1], ("rpc_grpc_status_code", "1")]
        ),
        1.0,
        "CANCELLED"
    );
    assert_eq!(value(&metrics, "rpc_client_active_requests", &cast), 0.0);
    system.redis.thaw();
    system.stop().await;
}
