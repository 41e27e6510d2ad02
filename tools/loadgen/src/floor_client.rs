//! One HTTP/1.1 exchange with a floor server on a fresh connection, for
//! the floors' tests ([`crate::refusal_floor`], [`crate::gateway_floor`]).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends `request` to `addr` and reads the whole answer: its status,
/// headers and body.
pub async fn exchange(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}
