//! The Grafana dashboard (`k8s/components/observability/votemesh-dashboard.json`,
//! provisioned by the compose profile and the kustomize component) asks
//! only for metrics the services really export: the real services run here,
//! in process, on real Redis and PostgreSQL, take a few votes through the
//! gateway and a live results stream, and every component's `/metrics` is
//! scraped; every metric name in the dashboard's PromQL must be among the
//! names scraped. A dashboard broken on purpose (a metric name misspelt)
//! must fail the same check.
//!
//! One process, one metrics registry: each component's `/metrics` here
//! shows what every component in the process recorded, so the check is
//! that a name is exported by votemesh, not by which component (in a
//! deployment each process exports only its own; the dashboard selects
//! them by `job`).

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, TestServer};
use votemesh_testing_services::{start_result, start_vote, start_worker, worker_settings};

/// Series Prometheus makes itself for every target, which no service
/// exports (`up`: whether the last scrape worked).
const PROMETHEUS_OWN: [&str; 1] = ["up"];
/// How long the test waits for the worker to commit the votes.
const WAIT: Duration = Duration::from_secs(30);
/// Words of PromQL that are not metric names.
const KEYWORDS: [&str; 13] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

fn dashboard_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../k8s/components/observability/votemesh-dashboard.json")
}

/// Every `expr` of every panel (rows and nested panels included).
fn expressions(dashboard: &Value, found: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

/// `text` without what lies between `open` and `close` (label matchers,
/// range selectors), nesting ignored: PromQL does not nest them.
fn without_spans(text: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in text.chars() {
        if c == open {
            inside = true;
        } else if c == close && inside {
            inside = false;
            out.push(' ');
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The metric names one PromQL expression selects: identifiers outside
/// label matchers, ranges and grouping clauses that are not functions or
/// aggregations (followed by `(` or by `by (`/`without (`), keywords or
/// Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = without_spans(&without_spans(expr, '{', '}'), '[', ']');
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let variable = start > 0 && chars[start - 1] == '$';
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            // A function or aggregation: `rate(`, `sum by (job) (`.
            let rest: String = chars[next..].iter().take(8).collect();
            let call = chars.get(next) == Some(&'(')
                || ["by", "without"].iter().any(|modifier| {
                    rest.strip_prefix(modifier)
                        .is_some_and(|after| after.trim_start().starts_with('('))
                });
            let keyword = KEYWORDS.contains(&word.to_lowercase().as_str());
            if keyword && call {
                // by (...), on (...): label names follow, not metrics.
                skip_group = true;
            } else if !call && !keyword && !variable && !skip_group {
                names.insert(word);
            }
        } else {
            if c == ')' {
                skip_group = false;
            }
            i += 1;
        }
    }
    names
}

/// Every metric name the dashboard's queries use.
fn dashboard_metrics(dashboard: &str) -> BTreeSet<String> {
    let dashboard: Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    exprs.iter().flat_map(|expr| metric_names(expr)).collect()
}

/// The sample names of a Prometheus text exposition (histograms' `_bucket`,
/// `_sum` and `_count` included, as Prometheus stores them).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names the dashboard uses that `scraped` does not hold.
fn missing(used: &BTreeSet<String>, scraped: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| !scraped.contains(*name) && !PROMETHEUS_OWN.contains(&name.as_str()))
        .cloned()
        .collect()
}

/// One HTTP/1.1 exchange: the status and the (de-chunked) body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on {addr}: no answer"))
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path} on {addr}: not HTTP: {head}"));
    let chunked = head.to_lowercase().contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Opens the live results stream and reads its first event, so the SSE
/// and upstream-stream gauges are recorded.
async fn watch_results(gateway: SocketAddr) {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let request = format!("GET /api/results/stream HTTP/1.1\r\nhost: {gateway}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buffer = [0; 4096];
    tokio::time::timeout(WAIT, async {
        while !seen.contains("event: tally") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the results stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tally event on the results stream: {seen}"));
}

#[tokio::test]
async fn the_dashboard_asks_only_for_metrics_the_services_export() {
    let dashboard = std::fs::read_to_string(dashboard_path()).unwrap();
    let used = dashboard_metrics(&dashboard);

    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let vote = start_vote(&redis, ANY_PORT).await;
    let result = start_result(&postgres, ANY_PORT).await;
    let worker = start_worker(&redis, &postgres, worker_settings("dashboard-test")).await;
    let (vote_addr, result_addr) = (vote.addr, result.addr);
    let gateway = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        let state = votemesh_gateway::AppState::connect(
            &format!("http://{vote_addr}"),
            &format!("http://{result_addr}"),
            shutdown,
        )
        .unwrap();
        votemesh_gateway::serve(listener, state)
    })
    .await;
    // The gateway's /metrics is on its operator port.
    let gateway_admin = TestServer::spawn(ANY_PORT, |listener, shutdown| async move {
        let state = votemesh_gateway::AppState::connect(
            &format!("http://{vote_addr}"),
            &format!("http://{result_addr}"),
            shutdown.clone(),
        )
        .unwrap();
        let limits = votemesh_gateway::ConnectionArgs::default();
        votemesh_gateway::connections::serve(
            listener,
            votemesh_gateway::admin_app(state),
            &limits,
            shutdown,
        )
        .await
    })
    .await;

    for (voter, option) in [("d1", "a"), ("d2", "b"), ("d3", "a")] {
        let body = format!(r#"{{"option":"{option}","voter_id":"{voter}"}}"#);
        let (status, answer) = http(gateway.addr, "POST", "/api/vote", &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, _) = http(gateway.addr, "POST", "/api/vote", r#"{"option":"zebra"}"#).await;
    assert_eq!(status, 400);
    // The worker commits the votes: the tally reaches 3.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http(gateway.addr, "GET", "/api/results", "").await;
        let tally: Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && tally["total"].as_u64() == Some(3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the votes were not counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch_results(gateway.addr).await;

    let mut scraped = BTreeSet::new();
    for (component, addr) in [
        ("gateway", gateway_admin.addr),
        ("vote", vote.addr),
        ("result", result.addr),
        ("worker", worker.addr),
    ] {
        let (status, text) = http(addr, "GET", "/metrics", "").await;
        assert_eq!(status, 200, "{component} /metrics: {text}");
        let names = exported(&text);
        assert!(
            names.contains("rpc_server_requests_total") || component == "gateway",
            "{component} /metrics holds no RPC counts: {text}"
        );
        scraped.extend(names);
    }

    let absent = missing(&used, &scraped);
    assert!(
        absent.is_empty(),
        "the dashboard asks for metrics no service exports: {absent:?}\nexported: {scraped:?}"
    );
    // Every family the dashboard is about is really there: a query must not
    // pass by matching nothing at all.
    assert!(
        used.contains("rpc_server_requests_total") && used.contains("http_server_requests_total")
    );

    // The same check on a dashboard broken on purpose fails, naming the
    // metric.
    let broken = dashboard.replace(
        "rpc_server_duration_seconds_bucket",
        "rpc_server_latency_seconds_bucket",
    );
    assert_ne!(broken, dashboard, "nothing to break");
    assert_eq!(
        missing(&dashboard_metrics(&broken), &scraped),
        ["rpc_server_latency_seconds_bucket"]
    );

    gateway.stop().await;
    for server in [worker, vote, result] {
        server.stop().await;
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (job, le) (rate(rpc_server_duration_seconds_bucket{job="vote",rpc_method=~"Cast.*"}[$__rate_interval]))) / ignoring (le) up"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        ["rpc_server_duration_seconds_bucket", "up"]
    );
}
