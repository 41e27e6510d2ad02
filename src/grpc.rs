//! The one place a votemesh gRPC server is assembled (the client side is
//! [`crate::client`]). Reading [`serve`] tells the whole inbound path of every service:
//!
//! ```text
//! TCP ─► per-request span (trace context from the caller) ─► load shedding
//!     ─► concurrency limit per connection ─► request timeout
//!     ─► GET /metrics (HTTP/1.1 too) | RPC metrics
//!     ─► grpc.health.v1 | reflection v1 + v1alpha | the business service
//! ```
//!
//! On shutdown the readiness names turn NOT_SERVING, the listener closes,
//! and in-flight calls finish before [`serve`] returns (at most
//! [`shutdown::DRAIN_TIMEOUT`] later).

use std::{convert::Infallible, time::Duration};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    codegen::{Service, http},
    server::NamedService,
    transport::Server,
};
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};

use crate::{
    client::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT},
    health::Health,
    metrics,
    proto::FILE_DESCRIPTOR_SET,
    shutdown, telemetry,
};

/// Longest a unary call may take before it fails with CANCELLED.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent calls per client connection before new ones are shed.
pub const CONCURRENCY_PER_CONNECTION: usize = 256;
/// Age after which a server asks a client to open a new connection (which
/// kube-proxy may send to another replica).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// How long calls in flight on a connection being recycled may still run
/// before it is closed. Clients send new calls on a new connection as soon
/// as they get the GOAWAY; what still fails is retried by the client.
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);

/// A gRPC server could not be set up or failed.
#[derive(Debug, Error)]
pub enum GrpcError {
    /// Reflection could not read the descriptor sets (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server's transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A background task the server needs ended; the server drained.
    #[error(transparent)]
    TaskEnded(#[from] crate::supervise::TaskEnded),
}

/// Serves `service` with health and reflection on `listener` until
/// `shutdown` is cancelled, then reports NOT_SERVING and drains.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    health: Health,
    health_service: HealthServer<impl HealthApi>,
    shutdown: CancellationToken,
) -> Result<(), GrpcError>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let reflection_v1 = reflection(S::NAME).build_v1()?;
    // grpcurl releases before 1.9 only speak v1alpha.
    let reflection_v1alpha = reflection(S::NAME).build_v1alpha()?;

    let drain = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.shut_down().await;
        }
    };
    let server = Server::builder()
        .trace_fn(telemetry::server_span)
        .load_shed(true)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .timeout(REQUEST_TIMEOUT)
        // Clients reconnect now and then, so connections (which Kubernetes
        // balances, not calls) spread over new replicas too.
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Prometheus scrapes GET /metrics on this same port over HTTP/1.1.
        .accept_http1(true)
        .layer(
            tower::ServiceBuilder::new()
                .layer(metrics::MetricsEndpointLayer)
                .layer(metrics::RpcMetricsLayer::new(metrics::Side::Server)),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain);
    shutdown::with_drain_deadline(server, &shutdown, Ok(())).await?;
    Ok(())
}

/// Reflection that describes exactly what this server serves: the business
/// service, health, and reflection itself (both versions).
fn reflection(service_name: &str) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in [service_name].into_iter().chain(INFRASTRUCTURE_SERVICES) {
        builder = builder.with_service_name(name);
    }
    builder
}

/// The services every votemesh gRPC server offers besides its own.
pub const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
