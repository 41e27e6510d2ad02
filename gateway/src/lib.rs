//! # votemesh gateway
//!
//! The HTTP face of votemesh (port 3000): browser pages, a JSON API and a
//! server-sent-events stream, each request translated into gRPC calls to
//! the vote and result services.
//!
//! ```text
//! browser ─► connections: cap, header-read timeout (connections)
//!         ─► tower stack (trace, metrics, headers, whole body, admission, timeout, gzip)
//!         ─► GET / · POST /vote · GET /results       (pages: HTML, works without JS)
//!         ─► POST /api/vote · GET /api/results       (JSON)      ─► vote / result gRPC
//!         ─► GET /api/results/stream (SSE) ◄─ fan-out ◄─ ONE WatchResults stream
//!
//! operator ─► port 8081: GET /metrics · GET /healthz · GET /readyz   (admin_app)
//! ```
//!
//! `/metrics` is on the operator port only, which no public route
//! reaches; the probes answer on both ports.
//!
//! ## Layout
//!
//! - [`upstream`]: the gRPC clients of the vote and result services.
//! - [`fanout`]: one upstream WatchResults stream shared by every browser;
//!   [`pacing`]: each tally rendered once, at most one per interval;
//!   [`events`]: one browser's results stream, and the limits on them.
//! - [`http_metrics`]: the layer measuring every request for `/metrics`.
//! - [`view`]: the tally as pages and JSON show it (with percentages).
//! - [`voter`]: the `voter_id` cookie.
//! - [`edge`]: limits on abuse of the vote routes (cross-site posts, votes
//!   per client address).
//! - [`error`]: the one mapping of gRPC statuses and bad requests to HTTP.
//! - [`api`]: JSON and SSE handlers; [`pages`]: HTML handlers; [`assets`]:
//!   CSS and JS compiled into the binary.
//! - [`app`]: routes and the tower stack, assembled in one place; [`run`].
//! - [`connections`]: accepting and bounding HTTP/1.1 connections;
//!   [`handover`]: a results stream's connection taken from hyper once its
//!   head is ready, written on the bare socket; [`whole_body`]: a body read whole before the request is admitted.
//! - [`cli`]: the command line; [`readiness`]: `--health-check`.

pub mod api;
pub mod assets;
pub mod cli;
pub mod connections;
pub mod edge;
pub mod error;
pub mod events;
pub mod fanout;
pub mod gate;
pub mod handover;
pub mod http_metrics;
pub mod pacing;
pub mod pages;
pub mod readiness;
pub mod upstream;
pub mod view;
pub mod voter;
pub mod whole_body;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::Response,
    routing::{get, post},
};
use gate::GateLayer;
use thiserror::Error;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer, classify::ServerErrorsFailureClass,
    compression::CompressionLayer, set_header::SetResponseHeaderLayer, trace::TraceLayer,
};
use votemesh::{
    admission::{Admission, AdmissionLayer, Refusal, Refuse},
    client::{ClientError, Transport},
    shutdown::CancellationToken,
    telemetry,
};

pub use connections::ConnectionArgs;
pub use fanout::Fanout;
pub use upstream::Upstream;

/// Default address of the operator port (`/metrics`, `/healthz`,
/// `/readyz`): the same port as the gRPC servers' plaintext health
/// listener, every address (dual-stack).
pub const DEFAULT_ADMIN_LISTEN: &str = "[::]:8081";
/// Default listen address: every address, IPv6 and IPv4 (dual-stack, see
/// [`votemesh::component::listen`]), port 3000.
pub const DEFAULT_LISTEN: &str = "[::]:3000";
/// Longest a request may take (an SSE stream only until its headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one gRPC call to a service may take.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted (a vote is a few dozen bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Seconds a client is asked to wait (Retry-After) when the gateway or a
/// service is unavailable.
pub const RETRY_AFTER_SECONDS: u64 = 2;
/// Content-Security-Policy the pages satisfy: everything from this origin,
/// no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The gateway could not start.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// A service address is not usable.
    #[error(transparent)]
    Upstream(#[from] ClientError),
    /// Serving failed.
    #[error("HTTP server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by every handler: one pointer to [`Shared`]. Every middleware
/// and handler that takes the state clones it, several times a request:
/// cloning the fields themselves (a dozen reference counts) was about
/// 3 % of the gateway's samples in an overload profile
/// (docs/BENCHMARKS.md), cloning this is one count.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] points to.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The gRPC clients.
    pub upstream: Upstream,
    /// The shared results stream.
    pub fanout: Fanout,
    /// The tallies as the browsers' streams write them.
    pub pacing: pacing::Pacing,
    /// Cancelled when the gateway shuts down (ends SSE streams).
    pub shutdown: CancellationToken,
    /// One permit per open SSE stream (`RESULTS_MAX_STREAMS`).
    pub event_streams: events::StreamCap,
    /// Limits on the vote routes (none by default).
    pub edge: Arc<edge::Edge>,
    /// Who gets in when the gateway is busy (an open SSE stream counts
    /// only until its headers are sent).
    pub admission: Admission,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The gateway's routes behind its tower stack: reading this function
/// tells a request's whole path.
pub fn app(state: AppState) -> Router {
    // Votes: refused when another site posts them, limited per client.
    let votes = Router::new()
        .route("/vote", post(pages::submit_vote))
        .route("/api/vote", post(api::cast_vote))
        .route_layer(GateLayer::new({
            let state = state.clone();
            move |request: &axum::extract::Request| edge::limit_votes(&state, request)
        }))
        .route_layer(GateLayer::new(edge::refuse_cross_site));
    let routes = Router::new()
        .route("/", get(pages::voting_page))
        .route("/results", get(pages::results_page))
        .merge(votes)
        .route("/api/results", get(api::results))
        .route(
            RESULTS_STREAM_PATH,
            get(api::results_stream).layer(axum::middleware::from_fn(span_until_head)),
        )
        .route("/api/options", get(api::options))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found);
    // The probes stay outside the request budget: a gateway busy with slow
    // upstream calls is overloaded, not dead, and must not be restarted.
    // /metrics is not here: it is the operator port's alone (admin_app).
    let probes = probes();

    let security_headers = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ));

    // Router::layer wraps each route on its own; the admission's permits
    // are shared by every clone, so they are one budget for every route.
    // Under sustained overload most arrivals are refused at the door,
    // counted and answered with the security headers but before their
    // span and their body's read, which took about a fifth of a
    // refusal's CPU (docs/SOAK.md, the fourteenth run).
    let door = GateLayer::new({
        let admission = state.admission.clone();
        move |_: &axum::extract::Request| {
            let refusal = admission.refuse_at_door()?;
            Some(GatewayRefusal.refuse(refusal, admission.retry_after()))
        }
    });
    let admission = AdmissionLayer::new(state.admission.clone(), GatewayRefusal);
    routes
        .layer(
            ServiceBuilder::new()
                .layer(http_metrics::MeasureLayer)
                .layer(security_headers)
                .layer(door)
                // The door answers in axum's body; the span's layer wraps
                // the body of the responses it passes in its own.
                .map_response(axum::response::IntoResponse::into_response)
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_failure(log_failure),
                )
                .layer(CatchPanicLayer::new())
                .layer(whole_body::ReadFirstLayer)
                .layer(admission)
                .layer(HandleErrorLayer::new(layer_error))
                .timeout(REQUEST_TIMEOUT)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(CompressionLayer::new()),
        )
        .merge(probes)
        .with_state(state)
}

/// The live results stream's path.
pub const RESULTS_STREAM_PATH: &str = "/api/results/stream";

/// The span of one request ([`telemetry::server_span`]), made by the
/// `TraceLayer`, which keeps it open until the response body ends: for a
/// results stream that is hours, one open OpenTelemetry span per browser.
/// That route gets no span here, but its own from [`span_until_head`].
fn make_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    if request.uri().path() == RESULTS_STREAM_PATH {
        return tracing::Span::none();
    }
    telemetry::server_span(request)
}

/// The results stream's span: the same as every request's
/// ([`telemetry::server_span`], continuing the caller's trace), but it
/// ends once the response head is ready (the stream opened, or refused),
/// not when the stream ends.
async fn span_until_head(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let span = telemetry::server_span(&request);
    next.run(request).instrument(span).await
}

/// `/healthz` and `/readyz`, served on both ports.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
}

/// The operator port's routes: `/metrics` and the probes, nothing a
/// browser needs. No public route (Ingress, HTTPRoute, NodePort) reaches
/// this port, so what the gateway measures is not published.
pub fn admin_app(state: AppState) -> Router {
    probes()
        .route(votemesh::metrics::METRICS_PATH, get(api::metrics))
        .with_state(state)
}

/// How the gateway refuses a request it cannot admit: 503 with
/// `Retry-After`, as `{"error": ...}`. The gateway's own budget (no
/// deadline comes with a browser's request) bounds the wait.
#[derive(Clone, Copy, Debug)]
struct GatewayRefusal;

impl Refuse<axum::body::Body> for GatewayRefusal {
    fn deadline(&self, _request: &axum::http::request::Parts) -> Option<Duration> {
        Some(REQUEST_TIMEOUT)
    }

    fn refuse(&self, refusal: Refusal, retry_after: Duration) -> Response {
        tracing::debug!(%refusal, "request refused");
        let mut response = error::HttpFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the gateway is busy ({refusal}); please retry"),
        )
        .into_json_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        response
    }
}

/// Logs a failed response: an error, unless it is a 503. A 503 is load,
/// not a fault (an admission refusal, a service at capacity or briefly
/// away); under overload there is one per refused request, and a log line
/// each would make refusing as dear as serving. Metrics count them
/// (`votemesh_http_requests_total{status="503"}`,
/// `votemesh_admission_refused_total`); with `RUST_LOG=debug` they are
/// logged too.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(%class, latency_ms, "response failed");
        }
        class => tracing::error!(%class, latency_ms, "response failed"),
    }
}

/// What the layers refuse: a request that ran out of time gets 504, as
/// `{"error": ...}`.
async fn layer_error(error: BoxError) -> Response {
    let failure = if error.is::<tower::timeout::error::Elapsed>() {
        error::HttpFailure::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request took longer than {REQUEST_TIMEOUT:?}"),
        )
    } else {
        tracing::error!(%error, "request failed in a layer");
        error::HttpFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    failure.into_json_response()
}

impl AppState {
    /// Clients for the services at `vote_addr` and `result_addr` (such as
    /// `http://vote:5000`) and the results fan-out, which starts at once
    /// and runs until `shutdown`. Connections are made lazily.
    pub fn connect(
        vote_addr: &str,
        result_addr: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, GatewayError> {
        Self::connect_over(vote_addr, result_addr, Transport::Plaintext, shutdown)
    }

    /// [`AppState::connect`] over `transport` (mutual TLS or plaintext).
    pub fn connect_over(
        vote_addr: &str,
        result_addr: &str,
        transport: Transport,
        shutdown: CancellationToken,
    ) -> Result<Self, GatewayError> {
        let upstream = Upstream::connect(vote_addr, result_addr, transport, UPSTREAM_TIMEOUT)?;
        Ok(Self::with_upstream(upstream, shutdown))
    }

    /// The same state with `edge`'s limits on the vote routes.
    pub fn with_edge(mut self, edge: edge::Edge) -> Self {
        Arc::make_mut(&mut self.0).edge = Arc::new(edge);
        self
    }

    /// The state over clients already made; starts the results fan-out.
    pub fn with_upstream(upstream: Upstream, shutdown: CancellationToken) -> Self {
        let fanout = Fanout::spawn(upstream.clone(), shutdown.clone());
        let pacing = pacing::Pacing::spawn(fanout.subscribe(), fanout.changes(), shutdown.clone());
        Self(Arc::new(Shared {
            upstream,
            fanout,
            pacing,
            shutdown,
            event_streams: events::StreamCap::new(events::DEFAULT_MAX_STREAMS),
            edge: Arc::default(),
            admission: Admission::default(),
        }))
    }

    /// The same state with `results`' limits on the live results streams.
    pub fn with_results(mut self, results: &events::ResultsArgs) -> Self {
        let shared = Arc::make_mut(&mut self.0);
        shared.event_streams = events::StreamCap::new(results.results_max_streams);
        shared
            .pacing
            .set_min_interval(Duration::from_millis(results.results_min_interval_ms));
        self
    }

    /// The same state admitting requests with `admission`.
    pub fn with_admission(mut self, admission: Admission) -> Self {
        Arc::make_mut(&mut self.0).admission = admission;
        self
    }

    /// The current tally: from the result service, or, while it does not
    /// answer, the last one the results stream brought, marked stale (the
    /// results keep loading through a result-service outage). Fails only
    /// when neither is known.
    pub async fn tally(&self) -> Result<view::TallyView, error::HttpFailure> {
        match self.upstream.results().await {
            Ok(tally) => Ok(tally.into()),
            Err(status) => match self.fanout.latest() {
                Some(mut last_known) => {
                    tracing::debug!(%status, "GetResults failed; answering the last known tally");
                    last_known.stale = true;
                    Ok(last_known)
                }
                None => Err(status.into()),
            },
        }
    }
}

/// Serves the gateway's public routes on `listener` with the default
/// connection limits ([`serve_with`]).
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), GatewayError> {
    serve_with(listener, None, state, &ConnectionArgs::default()).await
}

/// Serves the gateway on `listener` (the public routes) and, when given,
/// `admin` (the operator port: [`admin_app`]) under `limits` until
/// `state.shutdown`, then lets requests in flight finish (SSE streams end),
/// for at most [`votemesh::shutdown::DRAIN_TIMEOUT`].
pub async fn serve_with(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: AppState,
    limits: &ConnectionArgs,
) -> Result<(), GatewayError> {
    tracing::info!(addr = %votemesh::component::local_addr(&listener), "gateway listening");
    let shutdown = state.shutdown.clone();
    let admin = admin.map(|admin| {
        tracing::info!(
            addr = %votemesh::component::local_addr(&admin),
            "operator port (/metrics, /healthz, /readyz) listening"
        );
        connections::serve(admin, admin_app(state.clone()), limits, shutdown.clone())
    });
    let public = connections::serve(listener, app(state), limits, shutdown.clone());
    let both = async {
        match admin {
            Some(admin) => tokio::try_join!(public, admin).map(|_| ()),
            None => public.await,
        }
    };
    votemesh::shutdown::with_drain_deadline(both, &shutdown, Ok(())).await?;
    Ok(())
}

/// How a gateway binary is set up besides its upstreams: the limits on
/// votes at the edge, on requests and on connections.
#[derive(Debug, Default)]
pub struct Limits {
    /// Limits on the vote routes.
    pub edge: edge::Edge,
    /// Who gets in when the gateway is busy.
    pub admission: Admission,
    /// Limits on connections.
    pub connections: ConnectionArgs,
    /// Limits on the live results streams.
    pub results: events::ResultsArgs,
}

/// [`AppState::connect_over`] `transport`, with `limits`, then
/// [`serve_with`] (the operator port on `admin`, when given).
pub async fn run(
    listener: TcpListener,
    admin: Option<TcpListener>,
    vote_addr: &str,
    result_addr: &str,
    transport: Transport,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let state = AppState::connect_over(vote_addr, result_addr, transport, shutdown)?
        .with_edge(limits.edge)
        .with_results(&limits.results)
        .with_admission(limits.admission);
    serve_with(listener, admin, state, &limits.connections).await
}
