//! The live results streams under pressure, against a real gateway: a
//! burst of tally changes reaches a slow reader as a handful of events,
//! the newest last; past `RESULTS_MAX_STREAMS` a stream is refused with
//! 503 and `Retry-After`, and a freed place is taken again.
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
use tokio::sync::mpsc;
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
async fn a_burst_of_a_thousand_changes_reaches_a_slow_reader_as_a_handful_of_events() {
    let (result, tallies) = scripted_results().await;
    let gateway = gateway(
        result.addr,
        ResultsArgs {
            results_min_interval_ms: 500,
            ..ResultsArgs::default()
        },
    )
    .await;
    tallies.send(tally(0)).unwrap();
    let mut reader =
        EventStream::open(&format!("http://{}/api/results/stream", gateway.addr)).await;
    assert_eq!(reader.next_tally().await["total"], 0);

    // 1,000 changes, one a millisecond or so; the reader does not read
    // meanwhile, as a phone on a bad network.
    let burst = tokio::spawn(async move {
        for total in 1..=1000 {
            tallies.send(tally(total)).unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tallies
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _tallies = burst.await.unwrap();

    let mut seen = Vec::new();
    loop {
        let total = reader.next_tally().await["total"].as_i64().unwrap();
        seen.push(total);
        if total == 1000 {
            break;
        }
    }
    assert!(
        seen.len() <= 8,
        "1,000 changes came as {} events: {seen:?}",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "only ever newer tallies: {seen:?}"
    );
    // Nothing older follows the newest.
    let after = tokio::time::timeout(Duration::from_secs(1), reader.next_tally()).await;
    assert!(after.is_err(), "an event after the newest: {after:?}");
    gateway.stop().await;
    result.stop().await;
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

    // A stream that ends frees its place.
    drop(first);
    wait_for("a freed place", WAIT, || async {
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
