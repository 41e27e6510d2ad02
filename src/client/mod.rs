//! The client side of votemesh's gRPC: channels to other components, and
//! asking a server for its health. Servers are assembled in
//! [`crate::grpc`]; nothing here depends on it.
//!
//! - [`channel`]: the lazy, self-reconnecting channel a component uses to
//!   call another (the gateway to vote and result), with the caller's
//!   trace context on every request ([`TracedRequests`]).
//! - [`connect`] and [`check_health`]: a channel to a known address,
//!   connected now, and the `grpc.health.v1` Check a probe makes.
//! - [`selfcheck`]: `--health-check`, a binary asking its own server.

pub mod selfcheck;

use std::{net::SocketAddr, time::Duration};

use thiserror::Error;
use tonic::{
    codegen::http,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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

/// A channel that adds the caller's trace context to every request.
pub type TracedChannel = InterceptedService<Channel, TracedRequests>;

/// A client channel to `address` (such as `http://vote:5000`) that connects
/// lazily and reconnects by itself, with the caller's trace context added
/// to every request.
pub fn channel(address: &str) -> Result<TracedChannel, ClientError> {
    let endpoint =
        Endpoint::from_shared(address.to_owned()).map_err(|_| ClientError::BadAddress {
            address: address.to_owned(),
        })?;
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(InterceptedService::new(channel, TracedRequests))
}

/// A plain channel to the server at `addr`, connected now (for checks of a
/// known server: `--health-check` and tests).
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query("/")
        .build()
        .unwrap_or_default();
    Channel::builder(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
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
