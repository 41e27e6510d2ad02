//! The vote service binary's logs as a cluster reads them: with
//! `LOG_FORMAT=json`, every line of its output is one JSON object, and a
//! line logged while serving a call carries that call's trace id; in any
//! format, output that is not a terminal has no colour codes.

use std::{process::Stdio, time::Duration};

use tokio::{io::AsyncReadExt, process::Command};
use tonic::metadata::MetadataValue;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient};
use votemesh_testing::{RedisServer, free_port, probe, process::signal};

const WAIT: Duration = Duration::from_secs(30);
/// The trace the test's call belongs to (a W3C trace id).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Runs `votemesh-vote` with `log_format`, casts one vote inside our trace,
/// stops it with SIGTERM, and returns everything it wrote to stdout.
async fn run_and_cast(redis: &RedisServer, log_format: &str) -> String {
    let port = free_port().await.unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(env!("CARGO_BIN_EXE_votemesh-vote"))
        .env("VOTE_LISTEN_ADDR", addr.to_string())
        .env("REDIS_URL", redis.url().expose())
        .env("LOG_FORMAT", log_format)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    probe::wait_for("the vote service ready", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    let mut client = VoteServiceClient::new(votemesh::client::connect(addr).await.unwrap());
    let mut request = tonic::Request::new(CastVoteRequest {
        voter_id: "logged".into(),
        option: "a".into(),
    });
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::try_from(traceparent).unwrap());
    client.cast_vote(request).await.unwrap();

    signal(child.id().unwrap(), libc::SIGTERM);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    output
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_calls_trace_id() {
    let redis = RedisServer::start().await.unwrap();
    let output = run_and_cast(&redis, "json").await;
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    assert!(lines.len() > 3, "{output}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
    }
    let listening = lines
        .iter()
        .find(|line| line["message"] == "vote service listening")
        .unwrap_or_else(|| panic!("a listening line in {output}"));
    assert!(
        listening["addr"]
            .as_str()
            .is_some_and(|addr| addr.starts_with("127.0.0.1:")),
        "the address by Display: {listening}"
    );
    let queued = lines
        .iter()
        .find(|line| line["message"] == "vote queued")
        .unwrap_or_else(|| panic!("a 'vote queued' line in {output}"));
    assert_eq!(queued["openTelemetry"]["traceId"], TRACE_ID, "{queued}");
    assert_eq!(queued["level"], "DEBUG");
    assert!(!output.contains('\u{1b}'), "no colour codes");
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_have_no_colour_codes() {
    let redis = RedisServer::start().await.unwrap();
    let output = run_and_cast(&redis, "text").await;
    assert!(output.contains("vote service listening"), "{output}");
    assert!(!output.contains('\u{1b}'), "no ANSI escapes in {output:?}");
}
