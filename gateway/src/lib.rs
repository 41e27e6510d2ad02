//! # votemesh gateway
//!
//! The HTTP face of votemesh (port 3000): browser pages, a JSON API and a
//! server-sent-events stream, each request translated into gRPC calls to
//! the vote and result services.
//!
//! ```text
//! browser ─► tower stack (trace, shed, limit, timeout, body limit, gzip, headers)
//!         ─► GET / · POST /vote · GET /results       (pages: HTML, works without JS)
//!         ─► POST /api/vote · GET /api/results       (JSON)      ─► vote / result gRPC
//!         ─► GET /api/results/stream (SSE) ◄─ fan-out ◄─ ONE WatchResults stream
//! ```
//!
//! ## Layout
//!
//! - [`upstream`]: the gRPC clients of the vote and result services.
//! - [`fanout`]: one upstream WatchResults stream shared by every browser.
//! - [`http_metrics`]: the layer measuring every request for `/metrics`.
//! - [`view`]: the tally as pages and JSON show it (with percentages).
//! - [`voter`]: the `voter_id` cookie.
//! - [`edge`]: limits on abuse of the vote routes (cross-site posts, votes
//!   per client address).
//! - [`error`]: the one mapping of gRPC statuses and bad requests to HTTP.
//! - [`api`]: JSON and SSE handlers; [`pages`]: HTML handlers; [`assets`]:
//!   CSS and JS compiled into the binary.
//! - [`app`]: routes and the tower stack, assembled in one place; [`run`].
//! - [`cli`]: the command line; [`readiness`]: `--health-check`.

pub mod api;
pub mod assets;
pub mod cli;
pub mod edge;
pub mod error;
pub mod fanout;
pub mod http_metrics;
pub mod pages;
pub mod readiness;
pub mod upstream;
pub mod view;
pub mod voter;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::Response,
    routing::{get, post},
};
use thiserror::Error;
use tokio::{net::TcpListener, sync::Semaphore};
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::{
    catch_panic::CatchPanicLayer, compression::CompressionLayer,
    set_header::SetResponseHeaderLayer, trace::TraceLayer,
};
use votemesh::{
    client::{ClientError, Transport},
    shutdown::CancellationToken,
    telemetry,
};

pub use fanout::Fanout;
pub use upstream::Upstream;

/// Default listen address: every address, IPv6 and IPv4 (dual-stack, see
/// [`votemesh::component::listen`]), port 3000.
pub const DEFAULT_LISTEN: &str = "[::]:3000";
/// Longest a request may take (an SSE stream only until its headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one gRPC call to a service may take.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted (a vote is a few dozen bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Requests handled at once before new ones are shed with 503 (an open
/// SSE stream counts only until its headers are sent).
pub const MAX_CONCURRENT_REQUESTS: usize = 512;
/// Open SSE streams per gateway before new ones get 503.
pub const MAX_EVENT_STREAMS: usize = 10_000;
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

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The gRPC clients, shared: a handler's state is a clone, and cloning
    /// the clients themselves (a boxed service stack each) for every
    /// request cost more CPU than the rest of the gateway.
    pub upstream: Arc<Upstream>,
    /// The shared results stream.
    pub fanout: Fanout,
    /// Cancelled when the gateway shuts down (ends SSE streams).
    pub shutdown: CancellationToken,
    /// One permit per open SSE stream.
    pub event_streams: Arc<Semaphore>,
    /// Limits on the vote routes (none by default).
    pub edge: Arc<edge::Edge>,
}

/// The gateway's routes behind its tower stack: reading this function
/// tells a request's whole path.
pub fn app(state: AppState) -> Router {
    // Votes: refused when another site posts them, limited per client.
    let votes = Router::new()
        .route("/vote", post(pages::submit_vote))
        .route("/api/vote", post(api::cast_vote))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::limit_votes,
        ))
        .route_layer(axum::middleware::from_fn(edge::refuse_cross_site));
    let routes = Router::new()
        .route("/", get(pages::voting_page))
        .route("/results", get(pages::results_page))
        .merge(votes)
        .route("/api/results", get(api::results))
        .route("/api/results/stream", get(api::results_stream))
        .route("/api/options", get(api::options))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found);
    // The probes stay outside the request budget: a gateway busy with slow
    // upstream calls is overloaded, not dead, and must not be restarted.
    let probes = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route(votemesh::metrics::METRICS_PATH, get(api::metrics));

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

    // Router::layer wraps each route on its own, so the concurrency limit
    // is a global one: one budget shared by every route.
    routes
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(telemetry::server_span))
                .layer(axum::middleware::from_fn(http_metrics::measure))
                .layer(security_headers)
                .layer(CatchPanicLayer::new())
                .layer(HandleErrorLayer::new(layer_error))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
                .timeout(REQUEST_TIMEOUT)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(CompressionLayer::new()),
        )
        .merge(probes)
        .with_state(state)
}

/// What the layers refuse: a shed request gets 503 with Retry-After, one
/// that ran out of time 504, both as `{"error": ...}`.
async fn layer_error(error: BoxError) -> Response {
    let failure = if error.is::<tower::load_shed::error::Overloaded>() {
        tracing::warn!("request shed: too many requests in flight");
        error::HttpFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is overloaded; please retry",
        )
        .with_retry_after()
    } else if error.is::<tower::timeout::error::Elapsed>() {
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
        self.edge = Arc::new(edge);
        self
    }

    /// The state over clients already made; starts the results fan-out.
    pub fn with_upstream(upstream: Upstream, shutdown: CancellationToken) -> Self {
        let fanout = Fanout::spawn(upstream.clone(), shutdown.clone());
        Self {
            upstream: Arc::new(upstream),
            fanout,
            shutdown,
            event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            edge: Arc::default(),
        }
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

/// Serves the gateway on `listener` until `state.shutdown`, then lets
/// requests in flight finish (SSE streams end), for at most
/// [`votemesh::shutdown::DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), GatewayError> {
    tracing::info!(addr = %votemesh::component::local_addr(&listener), "gateway listening");
    let shutdown = state.shutdown.clone();
    // The peer's address keys the vote limit.
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    votemesh::shutdown::with_drain_deadline(server, &shutdown, Ok(())).await?;
    Ok(())
}

/// [`AppState::connect_over`] `transport`, with `edge`'s limits, then
/// [`serve`].
pub async fn run(
    listener: TcpListener,
    vote_addr: &str,
    result_addr: &str,
    transport: Transport,
    edge: edge::Edge,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let state = AppState::connect_over(vote_addr, result_addr, transport, shutdown)?;
    serve(listener, state.with_edge(edge)).await
}
