//! The one mapping from failures to HTTP: gRPC statuses from the services
//! and rejected requests become an [`HttpFailure`] (status, message,
//! Retry-After), which JSON routes answer as `{"error": "..."}` and pages
//! as an HTML page.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;

use crate::RETRY_AFTER_SECONDS;

/// A request that failed, ready to be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpFailure {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the person or program that asked.
    pub message: String,
    /// Whether to send `Retry-After`.
    pub retry_after: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl HttpFailure {
    /// A failure with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    /// A 400 for a request the gateway itself rejects.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }

    /// Answers as JSON: `{"error": message}`.
    pub fn into_json_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        self.add_retry_after(&mut response);
        response
    }

    /// Adds `Retry-After` to `response` when asked for.
    pub fn add_retry_after(&self, response: &mut Response) {
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
    }
}

impl From<tonic::Status> for HttpFailure {
    /// The mapping of a service's gRPC status to HTTP.
    fn from(status: tonic::Status) -> Self {
        let timed_out = || {
            Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "a votemesh service did not answer in time",
            )
        };
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Self::bad_request(status.message())
            }
            Code::NotFound => Self::new(StatusCode::NOT_FOUND, status.message()),
            // The vote queue is full (Redis at its memory limit): the system
            // is overloaded, not the client too demanding.
            Code::ResourceExhausted => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, status.message()).with_retry_after()
            }
            // CANCELLED has two sources. A service answers it when its
            // request timeout fires (tonic's server timeout answers
            // CANCELLED, also when it is the caller's deadline that ran
            // out): the call took too long, as with DEADLINE_EXCEEDED. Our
            // own client makes it from a transport error (a connection
            // closed under the call, retries spent), and then keeps the
            // error as the status' source; a status read off the wire has
            // none. That one means the service is unavailable for now.
            Code::Cancelled if std::error::Error::source(&status).is_none() => timed_out(),
            Code::Unavailable | Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "a votemesh service is unavailable; please retry shortly",
            )
            .with_retry_after(),
            Code::DeadlineExceeded => timed_out(),
            code => {
                tracing::warn!(?code, message = status.message(), "upstream call failed");
                Self::new(StatusCode::BAD_GATEWAY, "a votemesh service failed")
            }
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for HttpFailure {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::FormRejection> for HttpFailure {
    fn from(rejection: axum::extract::rejection::FormRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// A JSON route's error.
#[derive(Debug)]
pub struct ApiError(pub HttpFailure);

impl<E: Into<HttpFailure>> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport error with a status in its chain.
    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Transport(#[source] tonic::Status);

    #[test]
    fn grpc_codes_map_to_http() {
        let cases = [
            (
                tonic::Status::invalid_argument("bad option"),
                StatusCode::BAD_REQUEST,
                false,
            ),
            (
                tonic::Status::unavailable("down"),
                StatusCode::SERVICE_UNAVAILABLE,
                true,
            ),
            (
                // As our client reads a connection closed under the call:
                // a status in the transport error's chain, which it keeps.
                tonic::Status::from_error(Box::new(Transport(tonic::Status::cancelled(
                    "connection closed",
                )))),
                StatusCode::SERVICE_UNAVAILABLE,
                true,
            ),
            (
                // As tonic's server timeout answers, read off the wire.
                tonic::Status::cancelled("Timeout expired"),
                StatusCode::GATEWAY_TIMEOUT,
                false,
            ),
            (
                tonic::Status::resource_exhausted("queue full"),
                StatusCode::SERVICE_UNAVAILABLE,
                true,
            ),
            (
                tonic::Status::deadline_exceeded("slow"),
                StatusCode::GATEWAY_TIMEOUT,
                false,
            ),
            (
                tonic::Status::internal("boom"),
                StatusCode::BAD_GATEWAY,
                false,
            ),
        ];
        for (status, http, retry_after) in cases {
            let failure = HttpFailure::from(status);
            assert_eq!((failure.status, failure.retry_after), (http, retry_after));
        }
        assert_eq!(
            HttpFailure::from(tonic::Status::invalid_argument("bad option")).message,
            "bad option"
        );
    }
}
