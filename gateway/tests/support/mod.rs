//! Shared by the gateway's tests: the services behind the gateway (on real
//! Redis and PostgreSQL), a gateway in front of them, and a small HTTP
//! client.

#![allow(dead_code)] // each test file uses its own part of this module

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use votemesh_gateway::AppState;
use votemesh_testing::{ANY_PORT as ANY, PostgresServer, RedisServer, TestServer};
use votemesh_testing_services::{start_result, start_vote, start_worker, worker_settings};

pub const WAIT: Duration = Duration::from_secs(30);

/// Starts a gateway in front of `vote` and `result`.
pub async fn start_gateway(vote: SocketAddr, result: SocketAddr) -> TestServer {
    start_gateway_on(ANY, vote, result).await
}

/// [`start_gateway`] on `addr` (such as the address of one stopped).
pub async fn start_gateway_on(
    addr: SocketAddr,
    vote: SocketAddr,
    result: SocketAddr,
) -> TestServer {
    TestServer::spawn(addr, move |listener, shutdown| {
        let state = AppState::connect(
            &format!("http://{vote}"),
            &format!("http://{result}"),
            shutdown,
        )
        .unwrap();
        votemesh_gateway::serve(listener, state)
    })
    .await
}

/// Starts a gateway's operator port (`/metrics`, `/healthz`, `/readyz`)
/// over its own state in front of `vote` and `result` (the metrics are
/// the process's, whichever state serves them).
pub async fn start_gateway_admin(vote: SocketAddr, result: SocketAddr) -> TestServer {
    TestServer::spawn(ANY, |listener, shutdown| async move {
        let state = AppState::connect(
            &format!("http://{vote}"),
            &format!("http://{result}"),
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
    .await
}

/// The whole system: real servers, the three services and a gateway. The
/// vote and result services can be stopped and started again on their
/// addresses.
pub struct System {
    pub redis: RedisServer,
    pub postgres: PostgresServer,
    pub vote_addr: SocketAddr,
    pub vote: Option<TestServer>,
    pub result_addr: SocketAddr,
    pub result: Option<TestServer>,
    pub worker: Option<TestServer>,
    pub gateway: TestServer,
}

impl System {
    /// Starts everything; without a worker, votes stay queued in Redis.
    pub async fn start(with_worker: bool) -> Self {
        let redis = RedisServer::start().await.unwrap();
        let postgres = PostgresServer::start().await.unwrap();
        let vote = start_vote(&redis, ANY).await;
        let result = start_result(&postgres, ANY).await;
        let worker = if with_worker {
            Some(start_worker(&redis, &postgres, worker_settings("gateway-test")).await)
        } else {
            None
        };
        let gateway = start_gateway(vote.addr, result.addr).await;
        Self {
            redis,
            postgres,
            vote_addr: vote.addr,
            vote: Some(vote),
            result_addr: result.addr,
            result: Some(result),
            worker,
            gateway,
        }
    }

    /// Stops the vote service.
    pub async fn stop_vote(&mut self) {
        if let Some(vote) = self.vote.take() {
            vote.stop().await;
        }
    }

    /// Starts the vote service again, on the same address.
    pub async fn restart_vote(&mut self) {
        self.stop_vote().await;
        self.vote = Some(start_vote(&self.redis, self.vote_addr).await);
    }

    /// Stops the result service and starts it again on the same address.
    pub async fn restart_result(&mut self) {
        if let Some(result) = self.result.take() {
            result.stop().await;
        }
        self.result = Some(start_result(&self.postgres, self.result_addr).await);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    /// Votes waiting in Redis.
    pub async fn queued(&self) -> String {
        self.redis
            .command(&["LLEN", votemesh::queue::QUEUE_KEY])
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        for server in [self.worker, self.vote, self.result].into_iter().flatten() {
            server.stop().await;
        }
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
