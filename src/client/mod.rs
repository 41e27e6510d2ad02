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
//!   connected now, and the `grpc.health.v1` Check a probe makes;
//!   [`connect_tls`] the same over mutual TLS.
//!
//! With mutual TLS ([`Transport::Tls`]) every connection is made by
//! [`crate::tls::client::TlsConnector`]: it presents this component's
//! certificate and verifies the server's against the CA and the name the
//! caller asked for.
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

use crate::{
    telemetry,
    tls::{Tls, client::TlsConnector},
};

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
    /// A server name cannot be verified over TLS.
    #[error("cannot verify {name:?} over TLS: {source}")]
    BadServerName {
        /// The name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a client reaches its servers.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plaintext HTTP/2 (h2c): no TLS configured.
    Plaintext,
    /// Mutual TLS with this identity; the servers' certificates must name
    /// the host the channel was asked for.
    Tls(Tls),
}

impl Transport {
    /// Mutual TLS when `tls` is set, plaintext otherwise.
    pub fn from_tls(tls: Option<&Tls>) -> Self {
        tls.cloned().map_or(Self::Plaintext, Self::Tls)
    }

    /// The URI scheme of its requests.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Plaintext => "http",
            Self::Tls(_) => "https",
        }
    }
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
/// each carries the caller's trace context. Over `transport`, whatever
/// the address's scheme (`http://` or `https://`). Call inside a tokio
/// runtime.
pub fn channel(address: &str, transport: Transport) -> Result<TracedChannel, ClientError> {
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
    let connector = Connector::new(transport, &host)?;
    Ok(channel_to(
        connector,
        balance::Dns { host, port },
        balance::RESOLVE_INTERVAL,
    ))
}

/// How each connection of a channel is made: plaintext, or TLS verifying
/// one server name.
#[derive(Clone, Debug)]
pub enum Connector {
    /// tonic's own TCP connector.
    Plaintext,
    /// TLS, expecting certificates that name the upstream.
    Tls(TlsConnector),
}

impl Connector {
    /// The connector for `transport` to servers named `server_name`.
    pub fn new(transport: Transport, server_name: &str) -> Result<Self, ClientError> {
        match transport {
            Transport::Plaintext => Ok(Self::Plaintext),
            Transport::Tls(tls) => {
                TlsConnector::new(tls, server_name)
                    .map(Self::Tls)
                    .map_err(|source| ClientError::BadServerName {
                        name: server_name.to_owned(),
                        source,
                    })
            }
        }
    }

    /// The URI scheme of its requests.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Plaintext => "http",
            Self::Tls(_) => "https",
        }
    }

    /// A lazily connected channel to `endpoint` through this connector.
    pub fn lazy(&self, endpoint: tonic::transport::Endpoint) -> Channel {
        match self {
            Self::Plaintext => endpoint.connect_lazy(),
            Self::Tls(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
        }
    }
}

/// [`channel`] over the addresses `resolver` gives, looked up again every
/// `interval` (tests use it to play a headless Service whose pods come and
/// go).
pub fn channel_to(
    connector: Connector,
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
        .service(balance::channel(connector, resolver, interval));
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

/// A channel to the server at `addr` over mutual TLS, connected now,
/// expecting a certificate that names `server_name`. An error says why the
/// connection or the handshake failed.
pub async fn connect_tls(
    addr: SocketAddr,
    tls: Tls,
    server_name: &str,
) -> Result<Channel, BoxError> {
    let connector = TlsConnector::new(tls, server_name)?;
    Ok(Channel::builder(address_uri("https", addr))
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await?)
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
    check_health_over(addr, service, None).await
}

/// [`check_health`], over mutual TLS when `tls` is given: the server's
/// certificate must name the first name of our own (a component checking
/// itself: its server holds the same identity).
pub async fn check_health_over(
    addr: SocketAddr,
    service: &str,
    tls: Option<&Tls>,
) -> Result<ServingStatus, tonic::Status> {
    let connected = match tls {
        None => connect(addr).await.map_err(BoxError::from),
        Some(tls) => {
            let names = tls.names();
            let name = names.first().map_or("localhost", String::as_str);
            connect_tls(addr, tls.clone(), name).await
        }
    };
    let channel = connected.map_err(|error| {
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
