//! The one place a votemesh gRPC server is assembled (the client side is
//! [`crate::client`]). Reading [`serve`] tells the whole inbound path of every service:
//!
//! ```text
//! TCP ─► TLS when configured (client certificate required; tls::server)
//!     ─► per-request span (trace context from the caller) ─► request timeout
//!     ─► GET /metrics (HTTP/1.1 too) | RPC metrics
//!     ─► admission: wait for capacity within the call's deadline, or
//!        UNAVAILABLE + grpc-retry-pushback-ms (health checks bypass it)
//!     ─► authorization by identity (the business service only)
//!     ─► grpc.health.v1 | reflection v1 + v1alpha | the business service
//! ```
//!
//! Connections are bounded in time: at [`MAX_CONNECTION_AGE`] every one is
//! shut down gracefully (HTTP/2 GOAWAY: the client opens a new connection
//! for its next calls, the calls and streams in flight finish on the old
//! one), HTTP/2 keepalive pings close a peer that stops answering within
//! [`KEEPALIVE_TIMEOUT`], and an HTTP/1.1 request head (the `/metrics`
//! path) must arrive within hyper's 30 s header timeout. A client that
//! connects and sends nothing, or only the HTTP/2 preface, is closed at
//! that age like every other (it has nothing in flight).
//!
//! No grace period is set on purpose: in tonic 0.14 a grace replaces the
//! graceful shutdown at the age with a hard close at age + grace, which
//! cut every call in flight and every WatchResults stream every 40 s.
//!
//! With mutual TLS on, a second, plaintext listener serves only
//! `grpc.health.v1` and `/metrics`: the kubelet's gRPC probes speak no TLS
//! (see [`Listener`]).
//!
//! On shutdown the readiness names turn NOT_SERVING, the listener closes,
//! and in-flight calls finish before [`serve`] returns (at most
//! [`shutdown::DRAIN_TIMEOUT`] later). The health-only listener keeps
//! answering (NOT_SERVING) until the business server has drained.

use std::{convert::Infallible, fmt, net::SocketAddr, time::Duration};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    codegen::{Service, http},
    server::NamedService,
    transport::Server,
};
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};

use crate::{
    admission::{Admission, AdmissionLayer, Refusal, Refuse},
    client::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT},
    component::local_addr,
    config::TlsServerArgs,
    deadline,
    health::Health,
    metrics,
    proto::FILE_DESCRIPTOR_SET,
    shutdown, telemetry,
    tls::{self, Tls, TlsError, authorize::AuthorizeLayer},
};

/// Longest a unary call may take before it fails with CANCELLED.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The metadata with which a refused call asks its client to wait before
/// retrying (milliseconds; gRPC's retry design, A6).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";
/// Age after which a server asks a client to open a new connection (which
/// kube-proxy may send to another replica).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);

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
    /// The server stopped taking connections before shutdown was asked for
    /// (its listener's stream ended); stopping so that it is restarted.
    #[error("the server stopped taking connections before shutdown was asked for")]
    ListenerEnded,
}

/// A listener could not be set up.
#[derive(Debug, Error)]
pub enum ListenError {
    /// The TLS settings make no identity.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a gRPC server listens, and how: plaintext (no TLS configured), or
/// mutual TLS with a plaintext health-only listener beside it. The kubelet's
/// gRPC probes cannot present a certificate (they speak no TLS at all), so
/// they go to that listener, which serves `grpc.health.v1` and `/metrics`
/// and never the business API.
pub struct Listener {
    /// The business port.
    tcp: TcpListener,
    /// Mutual TLS, when configured.
    tls: Option<ServerTls>,
    /// Who gets in when the server is busy.
    admission: Admission,
}

/// The mutual TLS part of a [`Listener`].
struct ServerTls {
    tls: Tls,
    /// Identities allowed to call the business service; empty: any.
    allowed: Vec<String>,
    /// The plaintext health-only listener.
    health: TcpListener,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self {
            tcp,
            tls: None,
            admission: Admission::default(),
        }
    }
}

impl Listener {
    /// Mutual TLS on `tcp` with `tls`'s identity; only `allowed` identities
    /// (empty: any from the CA) may call the business service; probes use
    /// `health`.
    pub fn mutual_tls(
        tcp: TcpListener,
        tls: Tls,
        allowed: Vec<String>,
        health: TcpListener,
    ) -> Self {
        Self {
            tcp,
            tls: Some(ServerTls {
                tls,
                allowed,
                health,
            }),
            admission: Admission::default(),
        }
    }

    /// The same listener admitting calls through `admission`
    /// ([`crate::admission`]); the default limits otherwise.
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Binds `listen` as a binary does: with mutual TLS (and the health
    /// listener) when `args` name an identity, plaintext otherwise. Call
    /// inside a tokio runtime (the identity is reloaded by a task).
    pub async fn bind(listen: SocketAddr, args: &TlsServerArgs) -> Result<Self, ListenError> {
        let bind = |addr: SocketAddr| async move {
            crate::component::listen(addr)
                .await
                .map_err(|source| ListenError::Bind { addr, source })
        };
        let tls = Tls::from_args(&args.identity)?;
        let tcp = bind(listen).await?;
        Ok(match tls {
            None => Self::from(tcp),
            Some(tls) => {
                Self::mutual_tls(tcp, tls, args.allowed(), bind(args.health_listen).await?)
            }
        })
    }

    /// The business port's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The component's identity when mutual TLS is on, for its own
    /// clients to present too (the Redis queue, [`crate::queue::connect`]).
    pub fn tls(&self) -> Option<Tls> {
        self.tls.as_ref().map(|tls| tls.tls.clone())
    }

    /// The health-only listener's address, when TLS is on.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .and_then(|tls| tls.health.local_addr().ok())
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", local_addr(&self.tcp))?;
        if let Some(tls) = &self.tls {
            write!(
                f,
                " (mutual TLS; plaintext health on {})",
                local_addr(&tls.health)
            )?;
        }
        Ok(())
    }
}

/// Serves `service` with health and reflection on `listener` until
/// `shutdown` is cancelled, then reports NOT_SERVING and drains.
pub async fn serve<S>(
    listener: impl Into<Listener>,
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

    let Listener {
        tcp,
        tls,
        admission,
    } = listener.into();
    let (tls, allowed, health_listener) = match tls {
        Some(ServerTls {
            tls,
            allowed,
            health,
        }) => (Some(tls), allowed, Some(health)),
        None => (None, Vec::new(), None),
    };
    let drain = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.shut_down().await;
        }
    };
    // The health-only listener serves until the business server has
    // drained, not only until the drain starts: the kubelet keeps probing
    // a pod that is draining, and should read NOT_SERVING, not a refused
    // connection.
    let business_drained = CancellationToken::new();
    // Both servers' futures are large; on the heap they keep the caller's
    // (the all-in-one binary joins four servers in one task) small.
    let health_only = health_listener.map(|listener| {
        Box::pin(
            Server::builder()
                .accept_http1(true)
                .timeout(REQUEST_TIMEOUT)
                .layer(metrics::MetricsEndpointLayer)
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(
                    tls::server::incoming(listener, None),
                    business_drained.clone().cancelled_owned(),
                ),
        )
    });
    let server = Server::builder()
        .trace_fn(telemetry::server_span)
        .timeout(REQUEST_TIMEOUT)
        // Clients reconnect now and then, so connections (which Kubernetes
        // balances, not calls) spread over new replicas too.
        .max_connection_age(MAX_CONNECTION_AGE)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Prometheus scrapes GET /metrics on this same port over HTTP/1.1.
        .accept_http1(true)
        .layer(
            tower::ServiceBuilder::new()
                .layer(metrics::MetricsEndpointLayer)
                .layer(metrics::RpcMetricsLayer::new(metrics::Side::Server))
                .layer(AdmissionLayer::new(admission, GrpcRefusal))
                .layer(AuthorizeLayer::new(S::NAME, &allowed)),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(tls::server::incoming(tcp, tls), drain);
    let server = Box::pin(async move {
        let served = server.await;
        business_drained.cancel();
        served
    });
    let both = async {
        match health_only {
            Some(health_only) => tokio::try_join!(server, health_only).map(|_| ()),
            None => server.await,
        }
    };
    shutdown::with_drain_deadline(both, &shutdown, Ok(())).await?;
    if !shutdown.is_cancelled() {
        // The listener's stream ended on its own (the TLS accept loop
        // stopped): the process must not exit 0 as if asked to stop.
        return Err(GrpcError::ListenerEnded);
    }
    Ok(())
}

/// How a gRPC server refuses a call it cannot admit: UNAVAILABLE with
/// [`RETRY_PUSHBACK`]; a call's deadline is its `grpc-timeout`; health
/// checks are always admitted (the kubelet must not restart a busy pod).
#[derive(Clone, Copy, Debug)]
struct GrpcRefusal;

impl Refuse<Body> for GrpcRefusal {
    fn deadline(&self, request: &http::request::Parts) -> Option<Duration> {
        deadline::of(&request.headers)
    }

    fn exempt(&self, request: &http::request::Parts) -> bool {
        request.uri.path().starts_with("/grpc.health.v1.Health/")
    }

    fn refuse(&self, refusal: Refusal, retry_after: Duration) -> http::Response<Body> {
        let mut status = tonic::Status::unavailable(format!("{refusal}; retry later"));
        if let Ok(value) = retry_after.as_millis().to_string().parse() {
            status.metadata_mut().insert(RETRY_PUSHBACK, value);
        }
        status.into_http()
    }
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
