//! Shared by the gateway's tests: the services behind the gateway (on real
//! Redis and PostgreSQL), a gateway in front of them, and a small HTTP
//! client.

#![allow(dead_code)] // each test file uses its own part of this module

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::PollArgs,
    queue::redis::RedisQueue,
    shutdown::CancellationToken,
    store,
    testing::{PostgresServer, RedisServer, probe},
};
use votemesh_gateway::{AppState, Fanout};

pub const WAIT: Duration = Duration::from_secs(30);

/// A server task with its own shutdown.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn listener(addr: SocketAddr) -> TcpListener {
    // A port just released may take a moment to be free again.
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

async fn wait_ready(addr: SocketAddr) {
    probe::wait_for("service ready", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
}

/// Starts the vote service on `addr` (port 0: any).
pub async fn start_vote(redis: &RedisServer, addr: SocketAddr) -> Running {
    let listener = listener(addr).await;
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(votemesh_vote::run(
        listener,
        RedisQueue::new(&redis.url()).unwrap(),
        PollArgs::default().poll().unwrap(),
        "vote-under-test".into(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
    wait_ready(addr).await;
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Starts the result service on `addr` (port 0: any).
pub async fn start_result(postgres: &PostgresServer, addr: SocketAddr) -> Running {
    let listener = listener(addr).await;
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let task = tokio::spawn(votemesh_result::run(
        listener,
        db,
        PollArgs::default().poll().unwrap(),
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
    wait_ready(addr).await;
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Starts a worker.
pub async fn start_worker(redis: &RedisServer, postgres: &PostgresServer) -> Running {
    let listener = listener("127.0.0.1:0".parse().unwrap()).await;
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let db = store::connect(&postgres.url()).await.unwrap();
    let source = RedisQueue::new(&redis.url())
        .unwrap()
        .for_worker("gateway-test");
    let task = tokio::spawn(votemesh_worker::run(
        listener,
        source,
        db,
        votemesh_worker::DrainSettings::new("gateway-test"),
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
    Running {
        addr,
        shutdown,
        task,
    }
}

/// Starts a gateway in front of `vote` and `result`; returns it and its fan-out.
pub async fn start_gateway(vote: SocketAddr, result: SocketAddr) -> (Running, Fanout) {
    let listener = listener("127.0.0.1:0".parse().unwrap()).await;
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let state = AppState::connect(
        &format!("http://{vote}"),
        &format!("http://{result}"),
        shutdown.clone(),
    )
    .unwrap();
    let fanout = state.fanout.clone();
    let task = tokio::spawn(votemesh_gateway::serve(listener, state));
    let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
    (
        Running {
            addr,
            shutdown,
            task,
        },
        fanout,
    )
}

/// The whole system: real servers, the three services and a gateway.
pub struct System {
    pub redis: RedisServer,
    pub postgres: PostgresServer,
    pub vote: Running,
    pub result: Running,
    pub worker: Option<Running>,
    pub gateway: Running,
    pub fanout: Fanout,
}

impl System {
    /// Starts everything; without a worker, votes stay queued in Redis.
    pub async fn start(with_worker: bool) -> Self {
        let redis = RedisServer::start().unwrap();
        let postgres = PostgresServer::start().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let vote = start_vote(&redis, any).await;
        let result = start_result(&postgres, any).await;
        let worker = if with_worker {
            Some(start_worker(&redis, &postgres).await)
        } else {
            None
        };
        let (gateway, fanout) = start_gateway(vote.addr, result.addr).await;
        Self {
            redis,
            postgres,
            vote,
            result,
            worker,
            gateway,
            fanout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    /// Votes waiting in Redis.
    pub fn queued(&self) -> String {
        self.redis
            .command(&["LLEN", votemesh::queue::QUEUE_KEY])
            .unwrap()
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        if let Some(worker) = self.worker {
            worker.stop().await;
        }
        self.vote.stop().await;
        self.result.stop().await;
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// Sends one request: `method` to `url` with optional body (and its
/// content type) and extra headers.
pub async fn request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = axum::http::Request::builder().method(method).uri(url);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    request("GET", url, None, Bytes::new(), headers).await
}

/// The `name=value` part of a Set-Cookie header, to send back as Cookie.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The total of `GET /api/results`.
pub async fn total(system: &System) -> i64 {
    get(&system.url("/api/results"), &[]).await.json()["total"]
        .as_i64()
        .unwrap()
}

/// A client of `GET /api/results/stream`.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: String,
}

impl EventStream {
    pub async fn open(url: &str) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = axum::http::Request::get(url)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next `tally` event's data.
    pub async fn next_tally(&mut self) -> serde_json::Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if event.lines().any(|line| line == "event: tally") {
                    let data: String = event
                        .lines()
                        .filter_map(|line| line.strip_prefix("data: "))
                        .collect();
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("an event within the wait")
                .expect("the stream stays open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Reads tallies until one has `total`.
    pub async fn until_total(&mut self, total: i64) -> serde_json::Value {
        loop {
            let tally = self.next_tally().await;
            if tally["total"].as_i64() == Some(total) {
                return tally;
            }
        }
    }
}
