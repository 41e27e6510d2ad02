//! The gateway's edges under real-world clients: connections that send
//! half a request or nothing at all are closed (header-read timeout), an
//! idle kept-alive connection too, the number of connections is capped
//! (counted, refused at once), and a busy gateway refuses with 503 and
//! `Retry-After` instead of failing the requests it can still take; once
//! overloaded, at its door, without waiting for a request's body.

mod support;

use std::time::Duration;

use support::{System, request};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use votemesh::admission::{Admission, AdmissionArgs};
use votemesh_gateway::{AppState, ConnectionArgs, connections::DEFAULT_HEADER_READ_TIMEOUT};
use votemesh_testing::{
    ANY_PORT, TestServer,
    metrics::{parse, value},
};

/// A gateway in front of `system` with `limits` and `admission`.
async fn gateway(system: &System, limits: ConnectionArgs, admission: Admission) -> TestServer {
    let (vote, result) = (system.vote_addr, system.result_addr);
    TestServer::spawn(ANY_PORT, move |listener, shutdown| async move {
        let state = AppState::connect(
            &format!("http://{vote}"),
            &format!("http://{result}"),
            shutdown,
        )
        .unwrap()
        .with_admission(admission);
        votemesh_gateway::serve_with(listener, None, state, &limits).await
    })
    .await
}

/// Reads until the gateway closes `stream` (end of file or a reset);
/// panics if it is still open after `within`.
async fn closed_within(mut stream: TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {within:?}"
    );
    received
}

fn vote_body(voter: &str) -> String {
    format!(r#"{{"option":"a","voter_id":"{voter}"}}"#)
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed_while_votes_go_through() {
    const EACH: usize = 200;
    let system = System::start(false).await;
    // A header timeout of 2 s, and the connections must be gone well
    // before hyper's own default (30 s): the configured value is the one
    // that acts. (The default, DEFAULT_HEADER_READ_TIMEOUT, is 10 s.)
    let limits = ConnectionArgs {
        header_read_timeout_ms: 2_000,
        ..ConnectionArgs::default()
    };
    let gateway = gateway(&system, limits, Admission::default()).await;
    let addr = gateway.addr;
    // A results stream (SSE) stays open beyond the header timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/results/stream HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &buffer[..n]
    );

    let mut silent = Vec::new();
    let mut half_sent = Vec::new();
    for _ in 0..EACH {
        silent.push(TcpStream::connect(addr).await.unwrap());
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /api/vote HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    // A kept-alive connection that answered one request, then goes idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /static/style.css HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile a normal vote goes through.
    let answer = request(
        "POST",
        &format!("http://{addr}/api/vote"),
        Some("application/json"),
        vote_body("meanwhile"),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");

    let within = Duration::from_secs(20);
    let closing = silent
        .into_iter()
        .chain(half_sent)
        .map(|stream| tokio::spawn(closed_within(stream, within)));
    for closed in futures_util::future::join_all(closing).await {
        let received = closed.unwrap();
        // Closed without an answer, or with a 408 at most.
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&received)
        );
    }
    let received = closed_within(idle, within).await;
    assert!(received.starts_with(b"HTTP/1.1 200"), "{received:?}");
    assert!(DEFAULT_HEADER_READ_TIMEOUT < Duration::from_secs(60));

    // The stream outlived them all: more comes on it (an event or the
    // 15 s keep-alive), not the end of the connection.
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(n > 0, "the results stream was closed");
}

#[tokio::test]
async fn a_slow_request_body_holds_no_permit() {
    let system = System::start(false).await;
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 2,
        max_queue_wait_ms: 2_000,
        overload_after_ms: 100,
        ..AdmissionArgs::default()
    });
    let gateway = gateway(&system, ConnectionArgs::default(), admission).await;
    let addr = gateway.addr;

    // Five clients send a vote's head and promise a body that never comes.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"POST /api/vote HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"opt",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    // Longer than the overload threshold: had they taken the two permits,
    // everyone would now be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = request(
        "POST",
        &format!("http://{addr}/api/vote"),
        Some("application/json"),
        vote_body("not-held-up"),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    drop(slow);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    const CAP: usize = 5;
    let system = System::start(false).await;
    // Silent connections stay for the whole test (a long header timeout):
    // the sixth must be refused by the cap, not let in by a timeout.
    let limits = ConnectionArgs {
        max_connections: CAP,
        header_read_timeout_ms: 60_000,
    };
    let gateway = gateway(&system, limits, Admission::default()).await;
    let addr = gateway.addr;
    let refused_before = refused_connections();

    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The gateway takes the connections in order; give it a request on
    // the last so it has surely counted all five.
    held.last_mut()
        .unwrap()
        .write_all(b"GET /static/style.css HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 16];
    let n = held.last_mut().unwrap().read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));

    // One more: closed at once, with nothing said.
    let one_too_many = TcpStream::connect(addr).await.unwrap();
    let received = closed_within(one_too_many, Duration::from_secs(5)).await;
    assert!(received.is_empty());
    assert!(refused_connections() - refused_before >= 1.0);

    // Once the silent ones are gone (their client closes them), there is
    // room again.
    drop(held);
    votemesh_testing::probe::wait_for("a connection admitted", Duration::from_secs(30), || async {
        request(
            "GET",
            &format!("http://{addr}/static/style.css"),
            None,
            "",
            &[],
        )
        .await
        .status
            == 200
    })
    .await;
}

fn refused_connections() -> f64 {
    let scrape = parse(&votemesh::metrics::render()).unwrap();
    value(&scrape, "votemesh_http_connections_refused_total", &[])
}

#[tokio::test]
async fn a_busy_gateway_answers_503_with_retry_after() {
    let system = System::start(false).await;
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 1,
        max_queue_wait_ms: 2_000,
        overload_after_ms: 100,
        ..AdmissionArgs::default()
    });
    let gateway = gateway(&system, ConnectionArgs::default(), admission.clone()).await;
    let url = format!("http://{}/static/style.css", gateway.addr);

    // A request holds the only permit for longer than the overload
    // threshold (the test holds it, as a stalled request would).
    let held = admission.admit(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = request("GET", &url, None, "", &[]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("1")
    );
    assert!(answer.body.contains("busy"), "{answer:?}");

    // Probes are not behind admission.
    let ready = request(
        "GET",
        &format!("http://{}/healthz", gateway.addr),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(ready.status, 200);

    drop(held);
    assert_eq!(request("GET", &url, None, "", &[]).await.status, 200);
}

/// The HTTP response head the gateway sends on `stream`, read until its
/// blank line; panics if none has come within `within`.
async fn response_head_within(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        while !received.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {within:?}");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends a vote's head and the start of its body, never the rest; the
/// head of the gateway's answer, lowercased, which must come within 2 s
/// (the gateway gives a body 10 s to arrive).
async fn half_sent_vote_answer(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/vote HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"opt",
        )
        .await
        .unwrap();
    response_head_within(&mut stream, Duration::from_secs(2))
        .await
        .to_ascii_lowercase()
}

fn http_requests(method: &str, route: &str, status: &str) -> f64 {
    let scrape = parse(&votemesh::metrics::render()).unwrap();
    value(
        &scrape,
        "http_server_requests_total",
        &[
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
        ],
    )
}

#[tokio::test]
async fn an_overloaded_gateway_refuses_at_its_door_before_reading_the_body() {
    let system = System::start(false).await;
    // One permit; overloaded once none has been free for 100 ms; then no
    // wait at all, so every arrival without a permit is refused.
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 1,
        max_queue_wait_ms: 2_000,
        overload_after_ms: 100,
        overloaded_queue_wait_ms: 0,
        ..AdmissionArgs::default()
    });
    let gateway = gateway(&system, ConnectionArgs::default(), admission.clone()).await;
    let addr = gateway.addr;

    // The test holds the only permit past the overload threshold; the
    // next request finds the gateway overloaded.
    let held = admission.admit(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://{addr}/static/style.css");
    assert_eq!(request("GET", &url, None, "", &[]).await.status, 503);

    // A vote whose body never comes: refused at once at the door, not
    // after the 10 s the gateway gives a body to arrive.
    let refused_before = http_requests("POST", "/api/vote", "503");
    let head = half_sent_vote_answer(addr).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    // Answered as any other response: the security headers, and counted
    // under its route and status.
    assert!(
        head.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{head}"
    );
    assert_eq!(
        http_requests("POST", "/api/vote", "503") - refused_before,
        1.0
    );

    // Capacity comes back: votes are served again.
    drop(held);
    votemesh_testing::probe::wait_for("a vote served", Duration::from_secs(10), || async {
        request(
            "POST",
            &format!("http://{addr}/api/vote"),
            Some("application/json"),
            vote_body("after-the-overload"),
            &[],
        )
        .await
        .status
            == 200
    })
    .await;
}

#[tokio::test]
async fn a_gateway_whose_whole_line_waits_refuses_at_its_door_before_reading_the_body() {
    let system = System::start(false).await;
    // One permit and room for one request to wait; never overloaded
    // within the test.
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 1,
        max_waiting: 1,
        max_queue_wait_ms: 10_000,
        overload_after_ms: 60_000,
        ..AdmissionArgs::default()
    });
    let gateway = gateway(&system, ConnectionArgs::default(), admission.clone()).await;

    // The test holds the permit, and a request of its own waits.
    let held = admission.admit(None).await.unwrap();
    let waiter = {
        let admission = admission.clone();
        tokio::spawn(async move { admission.admit(None).await.map(drop) })
    };
    votemesh_testing::probe::wait_for("one request waiting", Duration::from_secs(5), || async {
        admission.waiting() == 1
    })
    .await;

    // The line is full: a vote is refused at once, its body unread.
    let head = half_sent_vote_answer(gateway.addr).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");

    drop(held);
    waiter.await.unwrap().unwrap();
}
