//! A collector that is down or slow never costs a vote: the vote service
//! binary, configured to export traces to an OTLP endpoint that refuses
//! connections (or one that accepts them and never answers), acknowledges
//! every vote, counts the spans it drops in
//! `votemesh_trace_spans_dropped_total`, and logs the loss once.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::{
    io::AsyncReadExt,
    net::TcpListener,
    process::{Child, Command},
};
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient};
use votemesh_testing::{
    RedisServer, free_port,
    metrics::{scrape, value},
    probe,
};

const WAIT: Duration = Duration::from_secs(30);
/// Votes cast in each test.
const VOTES: usize = 200;

/// Starts `votemesh-vote` exporting traces to `collector`, with `env` on top.
async fn start_vote(
    redis: &RedisServer,
    collector: SocketAddr,
    env: &[(&str, &str)],
) -> (Child, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port().await.unwrap()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_votemesh-vote"));
    command
        .env("VOTE_LISTEN_ADDR", addr.to_string())
        .env("REDIS_URL", redis.url().expose())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    probe::wait_for("the vote service ready", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    (child, addr)
}

/// Casts [`VOTES`] votes, each of which must be acknowledged.
async fn cast_votes(addr: SocketAddr) {
    let mut client = VoteServiceClient::new(votemesh::client::connect(addr).await.unwrap());
    for voter in 0..VOTES {
        let vote = CastVoteRequest {
            voter_id: format!("traced-{voter}"),
            option: "a".into(),
        };
        client
            .cast_vote(vote)
            .await
            .unwrap_or_else(|status| panic!("vote {voter} refused: {status}"));
    }
}

/// Waits until `votemesh_trace_spans_dropped_total{reason}` moves; checks
/// that every vote was counted as accepted and none exported.
async fn wait_for_drops(addr: SocketAddr, reason: &str) {
    probe::wait_for(&format!("spans dropped for {reason}"), WAIT, || async {
        let metrics = scrape(addr).await.unwrap();
        value(
            &metrics,
            "votemesh_trace_spans_dropped_total",
            &[("reason", reason)],
        ) > 0.0
    })
    .await;
    let metrics = scrape(addr).await.unwrap();
    assert_eq!(
        value(&metrics, "votemesh_votes_accepted_total", &[]),
        VOTES as f64
    );
    assert_eq!(
        value(&metrics, "votemesh_trace_spans_exported_total", &[]),
        0.0
    );
}

/// Everything the process wrote, once it is killed.
async fn output_of(mut child: Child) -> String {
    child.kill().await.unwrap();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    output
}

#[tokio::test]
async fn a_collector_that_refuses_connections_costs_no_vote() {
    let redis = RedisServer::start().await.unwrap();
    // A free port nobody listens on: every connection is refused.
    let collector = SocketAddr::from(([127, 0, 0, 1], free_port().await.unwrap()));
    let (vote, addr) = start_vote(&redis, collector, &[]).await;

    cast_votes(addr).await;
    wait_for_drops(addr, "export_failed").await;

    let output = output_of(vote).await;
    assert_eq!(
        output.matches("cannot export traces").count(),
        1,
        "the loss is logged once: {output}"
    );
    assert!(
        !output.contains("BatchSpanProcessor"),
        "no error line a batch from the SDK: {output}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_no_vote() {
    let redis = RedisServer::start().await.unwrap();
    // Accepts connections and never answers: each export waits for its
    // timeout while spans keep coming.
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = collector.accept().await {
            held.push(socket);
        }
    });
    let (vote, addr) = start_vote(
        &redis,
        collector_addr,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "120000"),
        ],
    )
    .await;

    cast_votes(addr).await;
    wait_for_drops(addr, "queue_full").await;

    let output = output_of(vote).await;
    assert_eq!(
        output.matches("trace export is behind").count(),
        1,
        "the loss is logged once: {output}"
    );
    silent.abort();
}
