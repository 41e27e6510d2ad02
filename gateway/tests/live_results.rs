//! The live results streams under pressure, against a real gateway: a
//! burst of tally changes reaches a reader as a handful of events, the
//! newest last; a reader that stops reading gets the newest tally, not a
//! backlog, when it reads again, and what it skipped is counted; past `RESULTS_MAX_STREAMS` a stream is refused with
//! 503 and `Retry-After`, and a freed place is taken again. A stream is
//! written past hyper (`gateway/src/handover.rs`): delimited by its
//! connection's close, with every layer's headers, after earlier responses
//! on its connection arrived whole; a HEAD is left to hyper.
//!
//! The result service here is a stand-in gRPC server whose WatchResults
//! sends exactly the tallies a test gives it, so a test knows how many
//! changes the gateway got.

mod support;

use std::{net::SocketAddr, pin::Pin, sync::Mutex, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use support::{EventStream, WAIT, get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tonic::{Request, Response, Status};
use votemesh::proto::v1::{
    self, GetResultsRequest, WatchResultsRequest,
    result_service_server::{ResultService, ResultServiceServer},
};
use votemesh_gateway::{AppState, events::ResultsArgs};
use votemesh_testing::{ANY_PORT, TestServer, probe::wait_for};

/// A tally of `total` votes, all for option `a`.
fn tally(total: i64) -> v1::Tally {
    v1::Tally {
        options: vec![v1::OptionCount {
            id: "a".into(),
            label: "Cats".into(),
            count: total,
        }],
        total,
        as_of: None,
    }
}

/// A result service whose (one) WatchResults stream sends what the test
/// puts in its channel.
struct ScriptedResults {
    tallies: Mutex<Option<mpsc::UnboundedReceiver<v1::Tally>>>,
}

type TallyStream = Pin<Box<dyn Stream<Item = Result<v1::Tally, Status>> + Send>>;

#[tonic::async_trait]
impl ResultService for ScriptedResults {
    async fn get_results(
        &self,
        _request: Request<GetResultsRequest>,
    ) -> Result<Response<v1::Tally>, Status> {
        Ok(Response::new(tally(0)))
    }

    type WatchResultsStream = TallyStream;

    async fn watch_results(
        &self,
        _request: Request<WatchResultsRequest>,
    ) -> Result<Response<TallyStream>, Status> {
        let tallies = self
            .tallies
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Status::unavailable("this stand-in serves one stream"))?;
        let stream = futures_util::stream::unfold(tallies, |mut tallies| async move {
            tallies.recv().await.map(|tally| (Ok(tally), tallies))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Starts the stand-in result service; the sender feeds its stream.
async fn scripted_results() -> (TestServer, mpsc::UnboundedSender<v1::Tally>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let service = ResultServiceServer::new(ScriptedResults {
        tallies: Mutex::new(Some(receiver)),
    });
    let server = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
    })
    .await;
    (server, sender)
}

/// Starts a gateway in front of `result` (no vote service: these tests
/// do not vote) with `results`' limits.
async fn gateway(result: SocketAddr, results: ResultsArgs) -> TestServer {
    TestServer::spawn(ANY_PORT, |listener, shutdown| {
        let state = AppState::connect("http://127.0.0.1:9", &format!("http://{result}"), shutdown)
            .unwrap()
            .with_results(&results);
        votemesh_gateway::serve(listener, state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_changes_reaches_a_reader_as_a_handful_of_events() {
    let (result, tallies) = scripted_results().await;
    // Far longer than the burst takes to send: the first change goes out
    // at once, the rest are merged into the one event at the interval's
    // end (a third only if sending took longer than an interval).
    let gateway = gateway(
        result.addr,
        ResultsArgs {
            results_min_interval_ms: 2_000,
            ..ResultsArgs::default()
        },
    )
    .await;
    tallies.send(tally(0)).unwrap();
    let mut reader =
        EventStream::open(&format!("http://{}/api/results/stream", gateway.addr)).await;
    assert_eq!(reader.next_tally().await["total"], 0);

    for total in 1..=1000 {
        tallies.send(tally(total)).unwrap();
    }
    let mut seen = Vec::new();
    let mut times = Vec::new();
    // Keep-alive comments keep the reader's each wait short: the whole
    // catch-up has its own.
    tokio::time::timeout(WAIT, async {
        loop {
            let total = reader.next_tally().await["total"].as_i64().unwrap();
            seen.push(total);
            times.push(std::time::Instant::now());
            if total == 1000 {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tally 1000 within the wait: {seen:?}"));
    // Events come at most one per interval (half of it here, as delivery
    // may delay one event more than the next).
    assert!(
        times
            .windows(2)
            .all(|pair| pair[1] - pair[0] >= Duration::from_millis(1_000)),
        "events closer than the interval: {seen:?} at {times:?}"
    );
    assert!(
        seen.len() <= 3,
        "1,000 changes came as {} events: {seen:?}",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "only ever newer tallies: {seen:?}"
    );
    // Nothing follows the newest.
    let after = tokio::time::timeout(Duration::from_secs(3), reader.next_tally()).await;
    assert!(after.is_err(), "an event after the newest: {after:?}");
    gateway.stop().await;
    result.stop().await;
}

/// The value of the counter line starting with `series` in this
/// process's metrics (the gateways of these tests run in it), 0 if absent.
fn counter(series: &str) -> u64 {
    votemesh::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A tally of `total` votes whose label is `label_bytes` long, so that a
/// few events fill the socket buffers.
fn big_tally(total: i64, label_bytes: usize) -> v1::Tally {
    let mut tally = tally(total);
    tally.options[0].label = "x".repeat(label_bytes);
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_gets_only_the_newest_tally_when_it_reads_again() {
    const SKIPPED: &str = "votemesh_results_changes_coalesced_total{stage=\"stream\"} ";
    const CHANGES: i64 = 200;
    const LABEL: usize = 128 * 1024;
    let (result, tallies) = scripted_results().await;
    // Every change is published: what the stalled reader misses, its own
    // stream skips.
    let gateway = gateway(
        result.addr,
        ResultsArgs {
            results_min_interval_ms: 0,
            ..ResultsArgs::default()
        },
    )
    .await;
    let url = format!("http://{}/api/results/stream", gateway.addr);
    tallies.send(big_tally(0, LABEL)).unwrap();
    // A reader that reads everything, to know each change was published.
    let mut follower = EventStream::open(&url).await;
    assert_eq!(follower.next_tally().await["total"], 0);

    // The stalled reader: a small receive buffer, the head and the first
    // tally read, then nothing read while the changes go out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(gateway.addr).await.unwrap();
    stalled
        .write_all(b"GET /api/results/stream HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while tallies_in(&received).is_empty() {
        let n = tokio::time::timeout(WAIT, stalled.read(&mut chunk))
            .await
            .expect("the first tally")
            .unwrap();
        assert!(n > 0, "the stream ended");
        received.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(tallies_in(&received), [0]);

    let skipped_before = counter(SKIPPED);
    for total in 1..=CHANGES {
        tallies.send(big_tally(total, LABEL)).unwrap();
        follower.until_total(total).await;
    }

    // Reading again: the stalled reader catches up with the newest.
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.last() != Some(&CHANGES) {
            let n = stalled.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended");
            received.extend_from_slice(&chunk[..n]);
            seen = tallies_in(&received);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tally {CHANGES} within the wait: {seen:?}"));
    let after_first = seen.len() as i64 - 1;
    assert!(
        after_first < CHANGES,
        "every one of {CHANGES} changes was written: nothing skipped"
    );
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "only ever newer tallies: {seen:?}"
    );
    // What it skipped is counted (the pacer moves the counts into the
    // metrics every second).
    let skipped = (CHANGES - after_first) as u64;
    wait_for("the skipped tallies counted", WAIT, || async {
        counter(SKIPPED) >= skipped_before + skipped
    })
    .await;
    gateway.stop().await;
    result.stop().await;
}

/// The totals of the complete `tally` events in `received` (a raw
/// HTTP/1.1 response: an event may be split across reads, but the label is
/// all `x` and the totals are whole in each `"total":N`).
fn tallies_in(received: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(received);
    text.match_indices("\"total\":")
        .filter_map(|(at, key)| {
            let rest = &text[at + key.len()..];
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse().ok()
        })
        .collect()
}

/// The status of a GET of `url`, without reading its body (a stream's
/// body does not end); the connection is dropped after.
async fn status_of(url: &str) -> (u16, Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = axum::http::Request::get(url)
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("an answer's head")
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry_after)
}

#[tokio::test]
async fn past_the_stream_cap_a_stream_gets_503_with_retry_after_and_a_freed_place_is_taken() {
    let (result, tallies) = scripted_results().await;
    tallies.send(tally(7)).unwrap();
    let gateway = gateway(
        result.addr,
        ResultsArgs {
            results_max_streams: 2,
            ..ResultsArgs::default()
        },
    )
    .await;
    let url = format!("http://{}/api/results/stream", gateway.addr);
    let mut first = EventStream::open(&url).await;
    let mut second = EventStream::open(&url).await;
    assert_eq!(first.next_tally().await["total"], 7);
    assert_eq!(second.next_tally().await["total"], 7);

    let refused = tokio::time::timeout(WAIT, get(&url, &[]))
        .await
        .expect("an answer, not a stream");
    assert_eq!(refused.status, 503, "{}", refused.body);
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|seconds| seconds.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert!(refused.json()["error"].is_string(), "{}", refused.body);
    // The polling fallback still answers.
    let polled = get(&format!("http://{}/api/results", gateway.addr), &[]).await;
    assert_eq!(polled.status, 200, "{}", polled.body);

    // A stream whose client leaves frees its place at once: well before
    // the next keep-alive comment (every 15 s) would find it gone.
    drop(first);
    wait_for("a freed place", Duration::from_secs(5), || async {
        status_of(&url).await.0 == 200
    })
    .await;
    // The cap and the open streams are in /readyz.
    let ready = get(&format!("http://{}/readyz", gateway.addr), &[]).await;
    assert_eq!(ready.json()["results_streams"]["max"], 2, "{}", ready.body);
    drop(second);
    gateway.stop().await;
    result.stop().await;
}

/// A connection to `addr` on which `request_line` (method and path) was
/// sent as an HTTP/1.1 request, its answer left to read.
async fn raw_request(addr: SocketAddr, request_line: &str) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("{request_line} HTTP/1.1\r\nHost: gateway\r\n\r\n").as_bytes())
        .await
        .unwrap();
    socket
}

/// Reads from `socket` into `received` until `done` says it has enough.
async fn read_until(
    socket: &mut tokio::net::TcpStream,
    received: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        while !done(received) {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the connection ended: {}",
                String::from_utf8_lossy(received)
            );
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within the wait: {}", String::from_utf8_lossy(received)));
}

#[tokio::test]
async fn a_stream_is_written_past_hyper_with_every_layers_headers_and_ends_with_its_connection() {
    let (result, tallies) = scripted_results().await;
    tallies.send(tally(3)).unwrap();
    let gateway = gateway(result.addr, ResultsArgs::default()).await;
    let mut socket = raw_request(gateway.addr, "GET /api/results/stream").await;
    let mut received = Vec::new();
    read_until(&mut socket, &mut received, |received| {
        tallies_in(received).contains(&3)
    })
    .await;
    let text = String::from_utf8_lossy(&received).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    // Delimited by the connection's close, not chunked as hyper would.
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    // The handler's headers and those the layers add.
    assert!(
        head.contains("\r\ncontent-type: text/event-stream"),
        "{head}"
    );
    assert!(head.contains("\r\nx-frame-options: deny"), "{head}");
    assert!(head.contains("\r\ncontent-security-policy: "), "{head}");
    // The events as they are, no chunk sizes between them.
    assert!(body.starts_with("retry: "), "{body:?}");
    assert!(body.contains("\n\nevent: tally\ndata: {"), "{body:?}");

    tallies.send(tally(4)).unwrap();
    read_until(&mut socket, &mut received, |received| {
        tallies_in(received).contains(&4)
    })
    .await;
    // The gateway stops: the stream ends, and with it the connection.
    gateway.stop().await;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut rest))
        .await
        .expect("the connection closed")
        .unwrap();
    result.stop().await;
}

#[tokio::test]
async fn a_stream_after_earlier_responses_on_its_connection_finds_them_whole() {
    const EARLIER: usize = 1000;
    let (result, tallies) = scripted_results().await;
    tallies.send(tally(5)).unwrap();
    let gateway = gateway(result.addr, ResultsArgs::default()).await;
    // Pipelined: many responses the client does not read at first (a
    // small receive buffer, so the gateway's writes wait), then a stream.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(gateway.addr).await.unwrap();
    let mut requests = "GET /static/results.js HTTP/1.1\r\nHost: gateway\r\n\r\n".repeat(EARLIER);
    requests.push_str("GET /api/results/stream HTTP/1.1\r\nHost: gateway\r\n\r\n");
    socket.write_all(requests.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut received = Vec::new();
    read_until(&mut socket, &mut received, |received| {
        tallies_in(received).contains(&5)
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    let script = votemesh_gateway::assets::RESULTS_JS;
    assert_eq!(
        text.matches(script).count(),
        EARLIER,
        "every earlier response whole"
    );
    let stream_head = text.rfind("text/event-stream").expect("the stream's head");
    assert!(
        text.rfind(script).unwrap() < stream_head,
        "the stream after them"
    );
    gateway.stop().await;
    result.stop().await;
}

#[tokio::test]
async fn a_head_of_the_stream_gets_only_the_head_and_keeps_its_connection() {
    let (result, tallies) = scripted_results().await;
    tallies.send(tally(2)).unwrap();
    let gateway = gateway(result.addr, ResultsArgs::default()).await;
    let mut socket = raw_request(gateway.addr, "HEAD /api/results/stream").await;
    let mut received = Vec::new();
    read_until(&mut socket, &mut received, |received| {
        received.windows(4).any(|window| window == b"\r\n\r\n")
    })
    .await;
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/event-stream"),
        "{head}"
    );
    // Written by hyper: no body, and the connection serves the next request.
    socket
        .write_all(b"GET /api/results HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut socket, &mut received, |received| {
        String::from_utf8_lossy(received).contains("application/json")
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("retry: "), "a body after a HEAD: {text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    gateway.stop().await;
    result.stop().await;
}
