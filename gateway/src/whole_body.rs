//! A request's whole body is read before the request is admitted
//! ([`votemesh::admission`]): a client that sends a request's head and
//! then trickles its body (or never sends it) holds a connection, which
//! the connection cap bounds, but never one of the permits every route
//! shares. Without this, a thousand such clients would hold every permit
//! and the gateway would refuse everybody else as overloaded.
//!
//! ```text
//! request ─► GET/HEAD: on at once
//!         ─► else: the body, at most MAX_BODY_BYTES, within BODY_READ_TIMEOUT
//!               ├─ whole      ─► on, with the bytes in memory
//!               ├─ too large  ─► 413
//!               ├─ too slow   ─► 408
//!               └─ broken     ─► 400
//! ```

use std::time::Duration;

use axum::{
    body::Body,
    extract::Request,
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::{MAX_BODY_BYTES, error::HttpFailure};

/// How long a client has to send a request's body once its head arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `request`'s whole body, then hands it on (axum middleware).
pub async fn read_first(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    let failure = match read {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            return next.run(request).await;
        }
        Ok(Err(error)) if error.is::<LengthLimitError>() => HttpFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "length limit exceeded: the request body is larger than {MAX_BODY_BYTES} bytes"
            ),
        ),
        Ok(Err(error)) => {
            HttpFailure::bad_request(format!("the request body could not be read: {error}"))
        }
        Err(_) => HttpFailure::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
        ),
    };
    failure.into_json_response()
}
