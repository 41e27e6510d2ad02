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

use std::{
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{Method, StatusCode},
    response::Response,
};
use futures_util::future::{BoxFuture, Either};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::{MAX_BODY_BYTES, error::HttpFailure};

/// How long a client has to send a request's body once its head arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Puts [`ReadFirst`] in front of a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadFirstLayer;

impl<S> tower::Layer<S> for ReadFirstLayer {
    type Service = ReadFirst<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadFirst { inner }
    }
}

/// Reads a request's whole body, then hands it on. A tower service, not
/// an axum `from_fn` middleware: a GET passes with no future of its own,
/// and a body's read costs one boxed future, not three allocations.
#[derive(Clone, Debug)]
pub struct ReadFirst<S> {
    inner: S,
}

impl<S> tower::Service<Request> for ReadFirst<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            return Either::Left(self.inner.call(request));
        }
        // The service that was polled ready answers once the body is in,
        // and a fresh clone stays for the next request (tower's usual
        // swap); the routes behind this layer are always ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            match read_whole(request).await {
                Ok(request) => inner.call(request).await,
                Err(failure) => Ok(failure.into_json_response()),
            }
        }))
    }
}

/// `request` with its whole body in memory, or why it could not be read.
async fn read_whole(request: Request) -> Result<Request, HttpFailure> {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    Err(match read {
        Ok(Ok(collected)) => {
            return Ok(Request::from_parts(parts, Body::from(collected.to_bytes())));
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
    })
}
