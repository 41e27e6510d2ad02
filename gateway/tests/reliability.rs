//! The request path while parts fail, against real Redis and PostgreSQL
//! with the real services behind the gateway: replicas restarted one by
//! one under load, connections recycled, Redis or the result service
//! down. Every scenario counts failed requests and votes exactly; none
//! asserts a time. `docs/RELIABILITY.md` records each with its figures.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use support::{EventStream, System, get, request};
use tokio::task::JoinSet;
use votemesh::client;
use votemesh_gateway::{AppState, UPSTREAM_TIMEOUT, Upstream};
use votemesh_testing::{ANY_PORT, Endpoints, PostgresServer, RedisServer, TestServer, probe};
use votemesh_testing_services::{start_result, start_vote_named, start_worker, worker_settings};

const JSON: Option<&str> = Some("application/json");
/// How often the gateway under test looks its upstreams' names up again.
const RESOLVE_INTERVAL: Duration = Duration::from_millis(100);

/// What a load run saw.
#[derive(Debug, Default)]
struct LoadReport {
    /// Requests answered 2xx.
    ok: u64,
    /// Every other answer or failure, described.
    failures: Vec<String>,
    /// Each voter's last acknowledged option.
    last_vote: HashMap<String, String>,
    /// Acknowledged votes per vote-service replica.
    served_by: BTreeMap<String, u64>,
}

/// Browsers' worth of traffic through the gateway at `base`: `clients`
/// loops, each voting for its own voters (who change their minds) and
/// reading the results, until `stop` is set. One pooled HTTP client, as
/// browsers keep their connections.
async fn load(base: String, clients: usize, stop: Arc<AtomicBool>) -> LoadReport {
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut loops = JoinSet::new();
    for client in 0..clients {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        loops.spawn(async move {
            let mut report = LoadReport::default();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let voter = format!("c{client}-v{}", round % 50);
                let option = if round.is_multiple_of(3) { "b" } else { "a" };
                let body = format!(r#"{{"option":"{option}","voter_id":"{voter}"}}"#);
                match send(&http, "POST", &format!("{base}/api/vote"), body).await {
                    Ok((200, answer)) => {
                        report.ok += 1;
                        report.last_vote.insert(voter, option.to_owned());
                        let replica = answer["served_by"].as_str().unwrap_or("?").to_owned();
                        *report.served_by.entry(replica).or_default() += 1;
                    }
                    Ok((status, answer)) => report
                        .failures
                        .push(format!("POST /api/vote: {status} {answer}")),
                    Err(error) => report.failures.push(format!("POST /api/vote: {error}")),
                }
                if round.is_multiple_of(4) {
                    match send(&http, "GET", &format!("{base}/api/results"), String::new()).await {
                        Ok((200, _)) => report.ok += 1,
                        Ok((status, answer)) => report
                            .failures
                            .push(format!("GET /api/results: {status} {answer}")),
                        Err(error) => report.failures.push(format!("GET /api/results: {error}")),
                    }
                }
            }
            report
        });
    }
    let mut total = LoadReport::default();
    while let Some(report) = loops.join_next().await {
        let report = report.expect("a load loop panicked");
        total.ok += report.ok;
        total.failures.extend(report.failures);
        total.last_vote.extend(report.last_vote);
        for (replica, count) in report.served_by {
            *total.served_by.entry(replica).or_default() += count;
        }
    }
    total
}

async fn send(
    http: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: String,
) -> Result<(u16, serde_json::Value), String> {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| error.to_string())?;
    let response = http
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// The tally a voter-by-voter count of `last_vote` gives.
fn expected_tally(last_vote: &HashMap<String, String>) -> BTreeMap<String, i64> {
    let mut tally = BTreeMap::new();
    for option in last_vote.values() {
        *tally.entry(option.clone()).or_default() += 1;
    }
    tally
}

/// The tally `GET /api/results` shows, option id -> count.
async fn shown_tally(base: &str) -> BTreeMap<String, i64> {
    let answer = get(&format!("{base}/api/results"), &[]).await.json();
    answer["options"]
        .as_array()
        .map(|options| {
            options
                .iter()
                .filter(|option| option["count"].as_i64() != Some(0))
                .map(|option| {
                    (
                        option["id"].as_str().unwrap_or_default().to_owned(),
                        option["count"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A gateway whose clients balance over `vote` and `result`, as over
/// headless Services.
async fn start_balanced_gateway(vote: Endpoints, result: Endpoints) -> TestServer {
    TestServer::spawn(ANY_PORT, |listener, shutdown| {
        let upstream = Upstream::new(
            client::channel_to(client::Connector::Plaintext, vote, RESOLVE_INTERVAL),
            client::channel_to(client::Connector::Plaintext, result, RESOLVE_INTERVAL),
            UPSTREAM_TIMEOUT,
        );
        votemesh_gateway::serve(listener, AppState::with_upstream(upstream, shutdown))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_request_and_loses_no_vote() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let mut votes = vec![
        start_vote_named(&redis, ANY_PORT, "vote-1").await,
        start_vote_named(&redis, ANY_PORT, "vote-2").await,
    ];
    let mut results = vec![
        start_result(&postgres, ANY_PORT).await,
        start_result(&postgres, ANY_PORT).await,
    ];
    let worker = start_worker(&redis, &postgres, worker_settings("rolling")).await;
    let vote_endpoints = Endpoints::new("vote", votes.iter().map(|server| server.addr));
    let result_endpoints = Endpoints::new("result", results.iter().map(|server| server.addr));
    let gateway = start_balanced_gateway(vote_endpoints.clone(), result_endpoints.clone()).await;
    let base = format!("http://{}", gateway.addr);
    let mut watcher = EventStream::open(&format!("{base}/api/results/stream")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(load(base.clone(), 8, stop.clone()));
    let settle = Duration::from_millis(1500);
    tokio::time::sleep(settle).await;
    // Each replica in turn: SIGTERM's graceful path (readiness NOT_SERVING,
    // listener closed, calls in flight finished), then a new process on
    // the same address. The name keeps listing it meanwhile, as DNS does
    // until Kubernetes drops a terminating pod's address.
    let started = Instant::now();
    for index in 0..2 {
        let addr = votes[index].addr;
        votes.remove(index).stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = format!("vote-{}", index + 1);
        votes.insert(index, start_vote_named(&redis, addr, &name).await);
        tokio::time::sleep(settle).await;
    }
    for index in 0..2 {
        let addr = results[index].addr;
        results.remove(index).stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        results.insert(index, start_result(&postgres, addr).await);
        tokio::time::sleep(settle).await;
    }
    stop.store(true, Ordering::Relaxed);
    let report = traffic.await.unwrap();
    println!(
        "rolling restart: {} requests answered 2xx over {:?}, {} failed; votes per replica {:?}; {} voters",
        report.ok,
        started.elapsed(),
        report.failures.len(),
        report.served_by,
        report.last_vote.len()
    );
    assert!(report.failures.is_empty(), "failed: {:?}", report.failures);
    assert!(report.ok > 100, "the load ran: {report:?}");

    // Calls are spread over both replicas (each within 2x of the other).
    let counts: Vec<u64> = report.served_by.values().copied().collect();
    assert_eq!(counts.len(), 2, "{:?}", report.served_by);
    assert!(
        counts[0] * 2 >= counts[1] && counts[1] * 2 >= counts[0],
        "balanced: {:?}",
        report.served_by
    );

    // Every acknowledged vote counted, each voter once, last vote wins.
    let expected = expected_tally(&report.last_vote);
    probe::wait_for(
        "the tally holds every acknowledged vote",
        support::WAIT,
        || {
            let (base, expected) = (&base, &expected);
            async move { &shown_tally(base).await == expected }
        },
    )
    .await;
    let total: i64 = expected.values().sum();
    assert_eq!(watcher.until_total(total).await["total"], total);

    gateway.stop().await;
    worker.stop().await;
    for server in votes.into_iter().chain(results) {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_load_across_connection_recycling_fails_nothing() {
    let system = System::start(true).await;
    let base = system.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(load(base.clone(), 4, stop.clone()));
    // Two full `max_connection_age` periods and then some.
    let period = votemesh::grpc::MAX_CONNECTION_AGE * 2 + Duration::from_secs(5);
    tokio::time::sleep(period).await;
    stop.store(true, Ordering::Relaxed);
    let report = traffic.await.unwrap();
    println!(
        "connection recycling: {} requests answered 2xx over {period:?}, {} failed",
        report.ok,
        report.failures.len()
    );
    assert!(report.failures.is_empty(), "failed: {:?}", report.failures);
    let expected = expected_tally(&report.last_vote);
    probe::wait_for(
        "the tally holds every acknowledged vote",
        support::WAIT,
        || {
            let (base, expected) = (&base, &expected);
            async move { &shown_tally(base).await == expected }
        },
    )
    .await;
    system.stop().await;
}

#[tokio::test]
async fn redis_down_stops_only_voting_and_voting_resumes_without_a_restart() {
    let mut system = System::start(true).await;
    let vote = r#"{"option":"a","voter_id":"before"}"#;
    assert_eq!(
        request("POST", &system.url("/api/vote"), JSON, vote, &[])
            .await
            .status,
        200
    );

    // Counted before Redis goes: the harness runs Redis without
    // persistence, so what it held would go with it.
    probe::wait_for("the first vote counted", support::WAIT, || async {
        get(&system.url("/api/results"), &[]).await.json()["total"] == 1
    })
    .await;

    system.redis.stop().await;
    let refused = request(
        "POST",
        &system.url("/api/vote"),
        JSON,
        r#"{"option":"b","voter_id":"during"}"#,
        &[],
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("2"));
    let form = request(
        "POST",
        &system.url("/vote"),
        Some("application/x-www-form-urlencoded"),
        "vote=b",
        &[],
    )
    .await;
    assert_eq!(form.status, 503);
    assert_eq!(form.header("retry-after"), Some("2"));
    for page in ["/api/results", "/results"] {
        assert_eq!(get(&system.url(page), &[]).await.status, 200, "{page}");
    }
    probe::wait_for(
        "the vote service reports NOT_SERVING",
        support::WAIT,
        || async { get(&system.url("/readyz"), &[]).await.json()["vote"] == "NOT_SERVING" },
    )
    .await;
    let ready = get(&system.url("/readyz"), &[]).await;
    assert_eq!(ready.status, 200, "the gateway stays ready");
    assert_eq!(ready.json()["status"], "degraded");
    assert_eq!(ready.json()["result"], "SERVING");

    system.redis.restart().await.unwrap();
    probe::wait_for("voting works again", support::WAIT, || async {
        request(
            "POST",
            &system.url("/api/vote"),
            JSON,
            r#"{"option":"b","voter_id":"after"}"#,
            &[],
        )
        .await
        .status
            == 200
    })
    .await;
    probe::wait_for("both votes counted", support::WAIT, || async {
        get(&system.url("/api/results"), &[]).await.json()["total"] == 2
    })
    .await;
    system.stop().await;
}

#[tokio::test]
async fn result_service_down_serves_the_last_tally_marked_stale_and_recovers() {
    let mut system = System::start(true).await;
    let vote = r#"{"option":"a","voter_id":"v1"}"#;
    assert_eq!(
        request("POST", &system.url("/api/vote"), JSON, vote, &[])
            .await
            .status,
        200
    );
    let mut watcher = EventStream::open(&system.url("/api/results/stream")).await;
    watcher.until_total(1).await;

    let result_addr = system.result_addr;
    if let Some(result) = system.result.take() {
        result.stop().await;
    }
    let stale = get(&system.url("/api/results"), &[]).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert_eq!(stale.json()["stale"], true);
    assert_eq!(stale.json()["total"], 1);
    let page = get(&system.url("/results"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("last results known"), "{}", page.body);
    probe::wait_for(
        "the fan-out reports its stream lost",
        support::WAIT,
        || async {
            let ready = get(&system.url("/readyz"), &[]).await;
            ready.status == 200
                && ready.json()["results_stream"]["open"] == false
                && ready.json()["result"] == "UNREACHABLE"
        },
    )
    .await;
    // Voting needs no result service.
    let vote = r#"{"option":"b","voter_id":"v2"}"#;
    assert_eq!(
        request("POST", &system.url("/api/vote"), JSON, vote, &[])
            .await
            .status,
        200
    );

    system.result = Some(start_result(&system.postgres, result_addr).await);
    probe::wait_for(
        "fresh results and the stream back",
        support::WAIT,
        || async {
            let results = get(&system.url("/api/results"), &[]).await.json();
            let ready = get(&system.url("/readyz"), &[]).await.json();
            results["stale"] == false
                && results["total"] == 2
                && ready["results_stream"]["open"] == true
                && ready["status"] == "ok"
        },
    )
    .await;
    assert_eq!(
        watcher.until_total(2).await["total"],
        2,
        "browsers' streams carried on"
    );
    system.stop().await;
}

#[tokio::test]
async fn an_upstream_out_of_time_is_a_504_and_the_gateway_stays_ready() {
    let postgres = PostgresServer::start().await.unwrap();
    let result = start_result(&postgres, ANY_PORT).await;
    // A vote "service" that takes connections and never answers, and then
    // a vote name with no address at all (a headless Service before any
    // pod is ready).
    let silent = tokio::net::TcpListener::bind(ANY_PORT).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let vote = Endpoints::new("vote", [silent_addr]);
    let gateway =
        start_balanced_gateway(vote.clone(), Endpoints::new("result", [result.addr])).await;
    let base = format!("http://{}", gateway.addr);

    for upstream in ["silent", "without an address"] {
        let late = request(
            "POST",
            &format!("{base}/api/vote"),
            JSON,
            r#"{"option":"a"}"#,
            &[],
        )
        .await;
        assert_eq!(late.status, 504, "{upstream}: {}", late.body);
        let ready = get(&format!("{base}/readyz"), &[]).await;
        assert_eq!(ready.status, 200, "{upstream}: the gateway stays ready");
        assert_eq!(ready.json()["vote"], "UNREACHABLE", "{upstream}");
        assert_eq!(ready.json()["result"], "SERVING", "{upstream}");
        assert_eq!(
            get(&format!("{base}/api/results"), &[]).await.status,
            200,
            "{upstream}: the results need no vote service"
        );
        vote.remove(silent_addr);
        tokio::time::sleep(RESOLVE_INTERVAL * 3).await;
    }
    holding.abort();
    gateway.stop().await;
    result.stop().await;
}
