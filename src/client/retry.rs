//! Retries of calls that are safe to repeat, as one tower layer shared by
//! every client: every votemesh RPC is. Reads change nothing. CastVote is
//! made safe by its idempotency key: every attempt of one call carries the
//! same `idempotency-key` (stamped here, once per call, unless the caller
//! set one), and the vote service queues a vote once per key, so a retry
//! whose first attempt was queued after all is answered as that attempt
//! and never becomes a later vote that overrides the voter's next one
//! ([`crate::idempotency`]).
//!
//! ```text
//! tonic client ─► CollectBody (the request's bytes, its deadline, its
//!                 idempotency key)
//!              ─► Retry<RetrySafeCalls> ─► the balanced channel
//! ```
//!
//! A call is tried again when it failed at the transport (a connection
//! refused, reset, or closed by a server recycling it with GOAWAY: the
//! call never reached a handler or its outcome is lost) or the server
//! answered UNAVAILABLE; never for any other status, and never when an
//! overloaded server refused it with `grpc-retry-pushback-ms`
//! ([`crate::admission`]). Retries wait a
//! jittered, growing pause ([`crate::backoff`]), stay inside the caller's
//! deadline (each attempt gets only the time left, and the whole call,
//! waiting for a replica included, ends at the deadline with
//! DEADLINE_EXCEEDED) and inside the idempotency key's repeat window
//! (none is sent later than [`MAX_REPEAT_WINDOW`] after the first attempt,
//! whatever the deadline), and draw on a budget shared by every call of
//! the client (at least [`MIN_RETRIES_PER_SECOND`], plus [`RETRY_PERCENT`]
//! of recent calls), so a real outage is not multiplied into a retry
//! storm.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::idempotency::{IdempotencyKey, MAX_REPEAT_WINDOW, METADATA_KEY, REPEAT_WINDOW_MARGIN};
use http_body_util::{BodyExt, Full};
use tonic::{
    body::Body,
    codegen::{
        Bytes,
        http::{self, HeaderValue},
    },
};
use tower::{
    BoxError, Layer, Service, ServiceExt,
    retry::{
        Policy,
        budget::{Budget, TpsBudget},
    },
};

/// Most attempts of one call, the first included.
pub const MAX_ATTEMPTS: u32 = 4;
/// Retries always allowed per second, whatever the traffic.
pub const MIN_RETRIES_PER_SECOND: u32 = 20;
/// Share of recent calls that may be retried on top of that.
pub const RETRY_PERCENT: f32 = 0.2;
/// Shortest pause before a retry (then doubling, with jitter).
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(20);
/// Longest pause before a retry.
pub const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Least time worth giving another attempt before the caller's deadline.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);
/// How far back the budget remembers calls.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// The gRPC status code UNAVAILABLE, as it appears in `grpc-status`.
const UNAVAILABLE: &str = "14";

/// The retry policy; clones (one per call) share one budget.
#[derive(Clone)]
pub struct RetrySafeCalls {
    budget: Arc<TpsBudget>,
}

impl Default for RetrySafeCalls {
    fn default() -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(
                BUDGET_WINDOW,
                MIN_RETRIES_PER_SECOND,
                RETRY_PERCENT,
            )),
        }
    }
}

impl std::fmt::Debug for RetrySafeCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrySafeCalls").finish_non_exhaustive()
    }
}

/// Which attempt a stored request is for, and until when it may run.
#[derive(Clone, Copy, Debug)]
struct Attempts {
    /// Attempts made so far, the first included.
    made: u32,
    /// When the caller's time runs out, if it set a deadline.
    deadline: Option<Instant>,
    /// When the first attempt was sent: no retry is sent later than its
    /// idempotency key's repeat window allows.
    first_sent: Instant,
}

impl<B> Policy<http::Request<Bytes>, http::Response<B>, BoxError> for RetrySafeCalls {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut http::Request<Bytes>,
        result: &mut Result<http::Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let retriable = match result {
            Err(_) => true,
            // An overloaded server's refusal carries a pushback: retrying
            // at once would add to the load it refused (the caller's
            // caller is told to come back later instead).
            Ok(response) => {
                let headers = response.headers();
                headers
                    .get("grpc-status")
                    .is_some_and(|status| status == UNAVAILABLE)
                    && !headers.contains_key(crate::grpc::RETRY_PUSHBACK)
            }
        };
        let attempts = request.extensions_mut().get_mut::<Attempts>()?;
        if !retriable || attempts.made >= MAX_ATTEMPTS {
            return None;
        }
        // A fresh draw for every pause: calls that failed together spread.
        let pause = crate::backoff::delays_between(FIRST_RETRY_DELAY, MAX_RETRY_DELAY)
            .nth(attempts.made as usize - 1)
            .unwrap_or(MAX_RETRY_DELAY);
        // A retry must reach the server while its first attempt's
        // idempotency marker lives (at most MAX_REPEAT_WINDOW from when the
        // server took it, which is after the client sent it): later, a
        // queued first attempt would be forgotten, and the retry would be a
        // second, later vote.
        if attempts.first_sent.elapsed() + pause + REPEAT_WINDOW_MARGIN >= MAX_REPEAT_WINDOW {
            return None;
        }
        let deadline = attempts.deadline;
        if let Some(deadline) = deadline {
            // Leave the next attempt some of the caller's time.
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= pause + MIN_ATTEMPT_TIME {
                return None;
            }
        }
        if !self.budget.withdraw() {
            tracing::debug!("retry budget spent; not retrying");
            return None;
        }
        attempts.made += 1;
        let attempt = attempts.made;
        if let Some(deadline) = deadline {
            // The next attempt gets the time left once the pause is over.
            let left = deadline.saturating_duration_since(Instant::now() + pause);
            if let Ok(value) = HeaderValue::from_str(&crate::deadline::encode(left)) {
                request.headers_mut().insert(crate::deadline::HEADER, value);
            }
        }
        let (service, method) = crate::metrics::rpc_labels(request.uri().path());
        let error = match result {
            Err(error) => error.to_string(),
            Ok(_) => "UNAVAILABLE".to_owned(),
        };
        tracing::debug!(%service, %method, %error, attempt, "retrying a call");
        metrics::counter!(
            "rpc_client_retries_total",
            "rpc_service" => service,
            "rpc_method" => method
        )
        .increment(1);
        Some(tokio::time::sleep(pause))
    }

    fn clone_request(&mut self, request: &http::Request<Bytes>) -> Option<http::Request<Bytes>> {
        let attempts = request.extensions().get::<Attempts>().copied();
        if attempts.is_some_and(|attempts| attempts.made == 1) {
            // The call's first attempt: it earns retries for later calls.
            self.budget.deposit();
        }
        // Everything the attempt needs, extensions (tonic's, and the
        // attempt count with the deadline) included; `retry` updates the
        // copy's `grpc-timeout` before it is sent.
        let mut clone = http::Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

/// Reads the whole request body (a unary or server-streaming call sends
/// one message) so the call can be sent again, notes the deadline the
/// caller set in `grpc-timeout`, and gives the call an idempotency key if
/// the caller did not.
#[derive(Clone, Debug)]
pub struct CollectBody<S> {
    inner: S,
}

/// Layer of [`CollectBody`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CollectBodyLayer;

impl<S> Layer<S> for CollectBodyLayer {
    type Service = CollectBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CollectBody { inner }
    }
}

impl<S> Service<http::Request<Body>> for CollectBody<S>
where
    S: Service<http::Request<Bytes>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that makes the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let mut request = http::Request::from_parts(parts, bytes);
            if !request.headers().contains_key(METADATA_KEY) {
                // One key for every attempt of this call.
                let key = IdempotencyKey::generate();
                if let Ok(value) = HeaderValue::from_str(key.as_str()) {
                    request.headers_mut().insert(METADATA_KEY, value);
                }
            }
            let deadline =
                crate::deadline::of(request.headers()).map(|timeout| Instant::now() + timeout);
            request.extensions_mut().insert(Attempts {
                made: 1,
                deadline,
                first_sent: Instant::now(),
            });
            let call = inner.oneshot(request);
            let Some(deadline) = deadline else {
                return call.await;
            };
            // The whole call, waiting for an address and retries included,
            // ends at the caller's deadline: what runs out of time is
            // DEADLINE_EXCEEDED, whichever layer noticed first.
            let outcome = tokio::time::timeout_at(deadline.into(), call).await;
            match outcome {
                Ok(Err(_)) | Err(_) if Instant::now() >= deadline => Err(deadline_exceeded()),
                Ok(result) => result,
                Err(_) => Err(deadline_exceeded()),
            }
        })
    }
}

/// The error of a call that ran out of its caller's time; tonic reads the
/// status from it.
fn deadline_exceeded() -> BoxError {
    Box::new(tonic::Status::deadline_exceeded(
        "the call did not finish within its deadline",
    ))
}

/// A request whose body is bytes again becomes one tonic can send.
pub fn into_body(request: http::Request<Bytes>) -> http::Request<Body> {
    request.map(|bytes| Body::new(Full::new(bytes)))
}
