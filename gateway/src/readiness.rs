//! `votemesh-gateway --health-check`: asks the gateway's own `GET /readyz`
//! over HTTP/1.1, for Docker's HEALTHCHECK in an image without curl.

use std::net::SocketAddr;

use axum::{body::Body, http::Request};
use hyper_util::rt::TokioIo;
use votemesh::client::selfcheck::{TIMEOUT, loopback};

/// `Ok` if the gateway listening on `listen` answers `/readyz` with 200.
pub async fn check(listen: SocketAddr) -> Result<(), String> {
    let addr = loopback(listen);
    let ask = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let request = Request::get("/readyz")
            .header("host", addr.to_string())
            .body(Body::empty())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{addr}/readyz answered {}", response.status()))
        }
    };
    tokio::time::timeout(TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(format!("{addr} did not answer within {TIMEOUT:?}")))
}
