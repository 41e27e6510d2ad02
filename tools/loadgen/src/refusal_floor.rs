//! The refusal floor: a bare HTTP/1.1 server (hyper, as the gateway uses)
//! that refuses every vote as the overloaded gateway does (503,
//! `Retry-After`, the same JSON error) and does nothing else: no router,
//! layers, counters or admission.
//!
//! ```text
//! POST /api/vote (any request) ─► hyper ─► 503 {"error": "the gateway is busy ..."}
//! GET /api/options             ─► hyper ─► 200 [{"id":"a"}] (so the generator takes it for a gateway)
//! ```
//!
//! Driven at the soak's overload rate on the core the system would run
//! on, its CPU per refusal is what one refused HTTP exchange costs on this
//! machine (hyper, the system calls, and over loopback the client's side
//! of TCP, which the kernel does in the sender's time): the least a
//! refusal by the gateway could cost, and with it the most of its
//! capacity a system that refuses on its own cores can serve at 1.5 x
//! (docs/BENCHMARKS.md#refusals-cost-what-a-request-costs). Bare on
//! purpose, like the no-op VoteService ([`crate::noop`]) and the streams
//! floor ([`crate::sse_floor`]).

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept;

/// What the overloaded gateway answers, byte for byte.
const REFUSAL: &[u8] =
    br#"{"error":"the gateway is busy (the server is overloaded); please retry"}"#;
/// One option, enough for the generator's check that this is a gateway.
const OPTIONS: &[u8] = br#"[{"id":"a","label":"A"}]"#;

/// Serves on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let http = http1::Builder::new();
    accept::each_connection(listener, shutdown, |stream| {
        let connection = http.serve_connection(TokioIo::new(stream), service_fn(answer));
        tokio::spawn(async move {
            // A client that goes away mid-request ends its connection; nothing to report.
            let _ = connection.await;
        });
    })
    .await;
}

/// Every request's answer: the options for `GET /api/options`, a refusal
/// for anything else. The body is read first, as the gateway reads a
/// vote's whole body before its admission layer.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let options = request.uri().path() == "/api/options";
    // A body cut short is refused all the same.
    let _ = request.into_body().collect().await;
    let (status, body) = if options {
        (StatusCode::OK, OPTIONS)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, REFUSAL)
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::Full;
    use hyper::{Method, Request, StatusCode, body::Bytes, header};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    /// One request on a fresh connection: its status, `Retry-After` and body.
    async fn ask(
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: &'static [u8],
    ) -> (StatusCode, Option<String>, Bytes) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "floor")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let (status, headers, body) = crate::floor_client::exchange(addr, request).await;
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        (status, retry_after, body)
    }

    #[tokio::test]
    async fn votes_are_refused_as_the_overloaded_gateway_refuses_them_and_options_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(super::serve(listener, shutdown.clone()));

        let vote = br#"{"voter_id":"v1","option":"a"}"#;
        let (status, retry_after, body) = ask(addr, Method::POST, "/api/vote", vote).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        // What the generator's failure label reads (target::http_failure).
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            error["error"].as_str().and_then(|e| e.split(';').next()),
            Some("the gateway is busy (the server is overloaded)")
        );

        let (status, retry_after, body) = ask(addr, Method::GET, "/api/options", b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(retry_after, None);
        let options: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(options[0]["id"], "a");

        shutdown.cancel();
        server.await.unwrap();
    }
}
