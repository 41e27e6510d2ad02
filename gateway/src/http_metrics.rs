//! Measures every request the gateway routes, by route template (so
//! `/static/{file}` is one series, not one per file), for `GET /metrics`:
//! `http_server_requests_total`, `http_server_request_duration_seconds`
//! (for SSE, to the response headers) and `http_server_active_requests`
//! (names after the OpenTelemetry HTTP conventions; see
//! [`votemesh::metrics`]). Requests no route matched count under
//! `http_route="unmatched"`, and a method outside HTTP's standard ones
//! under `http_request_method="_OTHER"`: the series stay bounded whatever
//! clients send.
//!
//! The handles of each (method, route) are made once and kept
//! ([`RouteTable`]): a request then costs a few atomic updates, not label
//! strings and registry lookups.
//!
//! A request is recorded however it ends, by a guard its future holds
//! ([`InFlight`]): with its response's status, or, when the client goes
//! away first (a browser that closes the tab or the connection: hyper then
//! drops the request's future), with [`CLIENT_CLOSED_REQUEST`].

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    response::Response,
};

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";
/// The method label of a method outside HTTP's standard ones.
const OTHER_METHOD: &str = "_OTHER";
/// The `http_response_status_code` of a request whose client went away
/// before it was answered: no status was sent, so none of HTTP's own fits.
/// 499 is nginx's "client closed request", the de-facto code for exactly
/// this, which log and dashboard tools already know; it is never sent.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The layer: wraps the rest of the stack, outermost but for the router,
/// so every answer is counted, refusals at admission's door too.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeasureLayer;

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measure { inner }
    }
}

/// The service [`MeasureLayer`] makes. A tower service, not an axum
/// `from_fn` middleware: that boxes the rest of the stack and its future
/// for every request, a measurable share of what a refusal costs.
#[derive(Clone, Debug)]
pub struct Measure<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Measure<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str);
        let in_flight =
            InFlight::start(RouteTable::global().get(method_label(request.method()), route));
        Measured {
            answer: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's answer, recorded when it comes (or, through
    /// [`InFlight`]'s drop, when the request is abandoned).
    pub struct Measured<F> {
        #[pin]
        answer: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, E> Future for Measured<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.answer.poll(cx));
        if let (Ok(response), Some(in_flight)) = (&answer, this.in_flight.take()) {
            in_flight.answered(response.status().as_u16());
        }
        Poll::Ready(answer)
    }
}

/// One request in flight: counted in `http_server_active_requests` while
/// it lives, and in the duration and the request counter when dropped,
/// with its response's status, or [`CLIENT_CLOSED_REQUEST`] if it was
/// dropped unanswered.
struct InFlight {
    metrics: Arc<RouteMetrics>,
    started: Instant,
    /// The response's status; `None` until it is answered.
    status: Option<u16>,
}

impl InFlight {
    fn start(metrics: Arc<RouteMetrics>) -> Self {
        metrics.active.increment(1.0);
        Self {
            metrics,
            started: Instant::now(),
            status: None,
        }
    }

    /// The request was answered with `status`; records it.
    fn answered(mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.active.decrement(1.0);
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
        self.metrics
            .answered(self.status.unwrap_or(CLIENT_CLOSED_REQUEST))
            .increment(1);
    }
}

/// HTTP's standard methods, each its own label.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `method` as a label: one of HTTP's standard methods, or `_OTHER`.
fn method_label(method: &Method) -> &'static str {
    STANDARD_METHODS
        .into_iter()
        .find(|standard| *standard == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

/// The handles of one (method, route).
#[derive(Debug)]
struct RouteMetrics {
    labels: [(&'static str, String); 2],
    active: metrics::Gauge,
    duration: metrics::Histogram,
    /// `http_server_requests_total` by status code, made on first use.
    by_status: RwLock<HashMap<u16, metrics::Counter>>,
}

impl RouteMetrics {
    fn new(method: &'static str, route: &str) -> Self {
        let labels = [
            ("http_request_method", method.to_owned()),
            ("http_route", route.to_owned()),
        ];
        Self {
            active: metrics::gauge!("http_server_active_requests", &labels),
            duration: metrics::histogram!("http_server_request_duration_seconds", &labels),
            labels,
            by_status: RwLock::default(),
        }
    }

    /// The request counter of responses with `status`.
    fn answered(&self, status: u16) -> metrics::Counter {
        if let Some(counter) = self
            .by_status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&status)
        {
            return counter.clone();
        }
        let [method, route] = self.labels.clone();
        let counter = metrics::counter!(
            "http_server_requests_total",
            &[
                method,
                route,
                ("http_response_status_code", status.to_string())
            ]
        );
        self.by_status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status)
            .or_insert(counter)
            .clone()
    }
}

/// Every (method, route) seen, with its handles. Bounded: routes are the
/// router's templates (or `unmatched`), methods the standard ones (or
/// `_OTHER`).
#[derive(Debug, Default)]
struct RouteTable {
    by_method: RwLock<HashMap<&'static str, HashMap<String, Arc<RouteMetrics>>>>,
}

impl RouteTable {
    fn global() -> &'static Self {
        static TABLE: OnceLock<RouteTable> = OnceLock::new();
        TABLE.get_or_init(Self::default)
    }

    fn get(&self, method: &'static str, route: &str) -> Arc<RouteMetrics> {
        if let Some(found) = self
            .by_method
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .and_then(|routes| routes.get(route))
        {
            return found.clone();
        }
        let made = Arc::new(RouteMetrics::new(method, route));
        self.by_method
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(method)
            .or_default()
            .entry(route.to_owned())
            .or_insert(made)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_their_own_label_and_any_other_is_other() {
        for (method, label) in [
            (Method::GET, "GET"),
            (Method::POST, "POST"),
            (Method::PATCH, "PATCH"),
            (Method::HEAD, "HEAD"),
        ] {
            assert_eq!(method_label(&method), label);
        }
        let made_up = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&made_up), OTHER_METHOD);
    }
}
