//! Measures every request the gateway routes, by route template (so
//! `/static/{file}` is one series, not one per file), for `GET /metrics`:
//! `http_server_requests_total`, `http_server_request_duration_seconds`
//! (for SSE, to the response headers) and `http_server_active_requests`
//! (names after the OpenTelemetry HTTP conventions; see
//! [`votemesh::metrics`]). Requests no route matched count under
//! `http_route="unmatched"`.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};

/// The middleware: wraps the rest of the stack.
pub async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let labels = [
        ("http_request_method", request.method().as_str().to_owned()),
        ("http_route", route),
    ];
    let active = metrics::gauge!("http_server_active_requests", &labels);
    active.increment(1.0);
    let started = Instant::now();
    let response = next.run(request).await;
    active.decrement(1.0);
    metrics::histogram!("http_server_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let [method, route] = labels;
    metrics::counter!(
        "http_server_requests_total",
        &[
            method,
            route,
            (
                "http_response_status_code",
                response.status().as_u16().to_string()
            )
        ]
    )
    .increment(1);
    response
}
