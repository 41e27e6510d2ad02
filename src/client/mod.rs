//! The client side of votemesh's gRPC: channels to other components, and
//! asking a server for its health. Servers are assembled in
//! `grpc`, which uses this module's keepalive settings; nothing here uses it.
//!
//! - [`channel`]: what a component uses to call another (the gateway to
//!   vote and result). Reading it tells the whole outbound path:
//!
//! ```text
//! call ─► TracedRequests (trace context) ─► RPC metrics ─► retry::CollectBody
//!      ─► Retry<retry::RetrySafeCalls> ─► balance: p2c over every address
//!         the name resolves to ─► FailFast ─► one tonic Channel per address
//! ```
//! - [`balance`]: client-side load balancing over a name's addresses.
//! - [`retry`]: retries of calls that are safe to repeat, within a budget.
//! - [`connect`] and [`check_health`]: a channel to a known address,
//!   connected now, and the `grpc.health.v1` Check a probe makes.
//! - [`selfcheck`]: `--health-check`, a binary asking its own server.

pub mod balance;
pub mod retry;
pub mod selfcheck;

use std::{net::SocketAddr, time::Duration};

use thiserror::Error;
use tonic::body::Body;
use tonic::{
    codegen::http::{self, Uri},
    service::interceptor::InterceptedService,
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer, util::BoxCloneSyncService};

use crate::telemetry;

/// HTTP/2 pings on idle connections, so a half-open one is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for a TCP connection to a votemesh server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client channel could not be set up.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A client address is not a valid URI.
    #[error("{address:?} is not a gRPC address such as http://vote:5000")]
    BadAddress {
        /// The address given.
        address: String,
    },
}

/// The channel every client uses: balanced, retrying, traced.
pub type TracedChannel = InterceptedService<
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, CallError>,
    TracedRequests,
>;

/// A call that failed below gRPC (no connection, connection lost). tonic
/// reads its source to pick the status (UNAVAILABLE, CANCELLED, …). A
/// concrete error type, not a boxed one, keeps the client futures `Send`.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct CallError(#[source] BoxError);

/// A client channel to `address` (such as `http://vote:5000`): calls are
/// spread over every address the name resolves to (re-resolved as they
/// change), connections are made lazily and remade by themselves, calls
/// that are safe to repeat are retried within the caller's deadline, and
/// each carries the caller's trace context. Call inside a tokio runtime.
pub fn channel(address: &str) -> Result<TracedChannel, ClientError> {
    let bad_address = || ClientError::BadAddress {
        address: address.to_owned(),
    };
    let uri: Uri = address.parse().map_err(|_| bad_address())?;
    let host = uri
        .host()
        .map(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .ok_or_else(bad_address)?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let scheme = uri.scheme_str().unwrap_or("http");
    Ok(channel_to(
        scheme,
        balance::Dns { host, port },
        balance::RESOLVE_INTERVAL,
    ))
}

/// [`channel`] over the addresses `resolver` gives, looked up again every
/// `interval` (tests use it to play a headless Service whose pods come and
/// go).
pub fn channel_to(
    scheme: &str,
    resolver: impl balance::Resolve,
    interval: Duration,
) -> TracedChannel {
    let retrying = ServiceBuilder::new()
        .map_err(CallError)
        .layer(crate::metrics::RpcMetricsLayer::new(
            crate::metrics::Side::Client,
        ))
        .layer(retry::CollectBodyLayer)
        .layer(RetryLayer::new(retry::RetrySafeCalls::default()))
        .map_request(retry::into_body)
        .service(balance::channel(scheme, resolver, interval));
    InterceptedService::new(BoxCloneSyncService::new(retrying), TracedRequests)
}

/// A plain channel to the server at `addr`, connected now (for checks of a
/// known server: `--health-check` and tests).
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::builder(address_uri("http", addr))
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
}

/// The URI of the server at `addr` (`http://10.1.2.3:5000/`).
fn address_uri(scheme: &str, addr: SocketAddr) -> Uri {
    Uri::builder()
        .scheme(scheme)
        .authority(addr.to_string())
        .path_and_query("/")
        .build()
        .unwrap_or_default()
}

/// Asks the server at `addr` for the status of `service` (`""`: readiness),
/// as a probe does. A server that cannot be reached is UNAVAILABLE; a name
/// it does not report is NOT_FOUND.
pub async fn check_health(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = connect(addr).await.map_err(|error| {
        tonic::Status::unavailable(format!("cannot connect to {addr}: {error}"))
    })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Interceptor that adds the current trace context to outgoing requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracedRequests;

impl tonic::service::Interceptor for TracedRequests {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        telemetry::inject_trace_context(request)
    }
}
