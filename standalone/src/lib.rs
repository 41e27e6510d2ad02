//! # votemesh, all in one process
//!
//! Runs the gateway, the vote service, the worker and the result service
//! side by side, each on its own port as in a real deployment (the gateway
//! reaches the others over gRPC on loopback), so clients cannot tell the
//! difference. By default every port is on loopback (127.0.0.1), and the
//! gRPC ports are the host ports compose and Tilt use, not the ports
//! inside containers ([`cli`]):
//!
//! ```text
//! :3000 gateway ─► :15000 vote ─► queue (Redis, or in-process) ─► worker (:18080)
//!        └───────► :15001 result ◄── database ◄─────────────────────────┘
//! ```
//!
//! With no Redis configured the queue is in-process ([`MemoryQueue`]); with
//! no database configured it is a SQLite file. The same SeaORM entities and
//! migrations serve both databases.

pub mod cli;

use std::{net::SocketAddr, time::Duration};

use thiserror::Error;
use tokio::net::TcpListener;
use votemesh::{
    config::ConnectionUrl,
    grpc::GrpcError,
    health::DEFAULT_PROBE_INTERVAL,
    poll::Poll,
    queue::{QueueError, VoteSink, VoteSource, memory::MemoryQueue, redis::RedisQueue},
    shutdown::CancellationToken,
    store::{self, DatabaseConnection, StoreError},
};
use votemesh_gateway::GatewayError;
use votemesh_worker::DrainSettings;

/// The listeners of the four servers.
#[derive(Debug)]
pub struct Listeners {
    /// The gateway's (HTTP).
    pub gateway: TcpListener,
    /// The vote service's.
    pub vote: TcpListener,
    /// The worker's (health and stats).
    pub worker: TcpListener,
    /// The result service's.
    pub result: TcpListener,
}

impl Listeners {
    /// Binds the four addresses ([`votemesh::component::listen`]: `[::]`
    /// is dual-stack).
    pub async fn bind(
        gateway: SocketAddr,
        vote: SocketAddr,
        worker: SocketAddr,
        result: SocketAddr,
    ) -> std::io::Result<Self> {
        Ok(Self {
            gateway: bind(gateway).await?,
            vote: bind(vote).await?,
            worker: bind(worker).await?,
            result: bind(result).await?,
        })
    }

    /// Four listeners on free loopback ports (for tests).
    pub async fn loopback() -> std::io::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::bind(any, any, any, any).await
    }

    /// The bound addresses.
    pub fn addrs(&self) -> std::io::Result<Addrs> {
        Ok(Addrs {
            gateway: self.gateway.local_addr()?,
            vote: self.vote.local_addr()?,
            worker: self.worker.local_addr()?,
            result: self.result.local_addr()?,
        })
    }
}

/// Where each server listens.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// The gateway (HTTP).
    pub gateway: SocketAddr,
    /// The vote service.
    pub vote: SocketAddr,
    /// The worker.
    pub worker: SocketAddr,
    /// The result service.
    pub result: SocketAddr,
}

/// The URL at which this process reaches one of its own servers: loopback
/// when the server listens on every address.
pub fn local_url(scheme: &str, addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", addr.port())
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    votemesh::component::listen(addr).await.map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    })
}

impl Addrs {
    /// When a server listens on loopback only, how to let other machines
    /// in: the variables to set, for a log line at start
    /// (`GATEWAY_LISTEN_ADDR=0.0.0.0:3000`); `None` when none does.
    pub fn how_to_open_up(&self) -> Option<String> {
        let on_loopback: Vec<String> = [
            ("GATEWAY_LISTEN_ADDR", self.gateway),
            ("VOTE_LISTEN_ADDR", self.vote),
            ("RESULT_LISTEN_ADDR", self.result),
            ("WORKER_LISTEN_ADDR", self.worker),
        ]
        .into_iter()
        .filter(|(_, addr)| addr.ip().is_loopback())
        .map(|(name, addr)| format!("{name}=0.0.0.0:{}", addr.port()))
        .collect();
        (!on_loopback.is_empty()).then(|| on_loopback.join(" "))
    }
}

/// Where the system keeps votes.
#[derive(Clone, Debug)]
pub struct Backends {
    /// Redis for the queue; `None`: the in-process queue.
    pub redis: Option<ConnectionUrl>,
    /// The database (PostgreSQL or SQLite).
    pub database: ConnectionUrl,
}

/// How the system runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The poll.
    pub poll: Poll,
    /// This instance's name (served_by, worker id).
    pub instance: String,
    /// How often the result service reads the tally for watchers.
    pub refresh_interval: Duration,
}

/// The system could not start or a server failed.
#[derive(Debug, Error)]
pub enum SystemError {
    /// The queue could not be set up.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A gRPC server failed.
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A listener's address could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs the four servers until `shutdown`, then drains them all.
pub async fn run(
    listeners: Listeners,
    backends: Backends,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), SystemError> {
    let db = store::connect(&backends.database).await?;
    let mut drain = DrainSettings::new(votemesh_worker::worker_id(&settings.instance));
    match &backends.redis {
        Some(url) => {
            let queue = RedisQueue::new(url)?;
            let source = queue.for_worker(&drain.worker_id);
            run_with(listeners, queue, source, db, settings, drain, shutdown).await
        }
        None => {
            // Queued votes live only in this process: drain them all
            // before stopping.
            drain.finish_queue_on_shutdown = true;
            let queue = MemoryQueue::new();
            run_with(
                listeners,
                queue.clone(),
                queue,
                db,
                settings,
                drain,
                shutdown,
            )
            .await
        }
    }
}

async fn run_with<Q: VoteSink, S: VoteSource>(
    listeners: Listeners,
    sink: Q,
    source: S,
    db: DatabaseConnection,
    settings: Settings,
    drain: DrainSettings,
    shutdown: CancellationToken,
) -> Result<(), SystemError> {
    let addrs = listeners.addrs()?;
    // Migrate before the result service starts asking for the tally.
    if let Err(error) = store::migrate(&db).await {
        tracing::warn!(%error, "cannot migrate yet; the worker will keep trying");
    }
    // The worker stops after the vote service: every vote acknowledged
    // before the end is queued by then, and the worker finishes it.
    let worker_shutdown = CancellationToken::new();
    let vote_service = votemesh_vote::run(
        listeners.vote,
        sink,
        settings.poll.clone(),
        settings.instance.clone(),
        DEFAULT_PROBE_INTERVAL,
        shutdown.clone(),
    );
    let vote = async {
        let served = vote_service.await;
        worker_shutdown.cancel();
        served
    };
    let worker = votemesh_worker::run(
        listeners.worker,
        source,
        db.clone(),
        drain,
        worker_shutdown.clone(),
    );
    let result = votemesh_result::run(
        listeners.result,
        db,
        settings.poll,
        settings.refresh_interval,
        shutdown.clone(),
    );
    let (vote_url, result_url) = (
        local_url("http", addrs.vote),
        local_url("http", addrs.result),
    );
    // The all-in-one run stays plaintext and unlimited (zero-config, local).
    // No operator port of its own: the process's metrics (one registry
    // for all four components) are on every gRPC server's /metrics.
    let gateway = votemesh_gateway::run(
        listeners.gateway,
        None,
        &vote_url,
        &result_url,
        votemesh::client::Transport::Plaintext,
        votemesh_gateway::Limits::default(),
        shutdown.clone(),
    );
    // A component that fails stops the others at once (a process that runs
    // three quarters of the system would look healthy and lose work).
    let (gateway, vote, worker, result) = tokio::join!(
        stop_all_on_failure(gateway, &shutdown),
        stop_all_on_failure(vote, &shutdown),
        stop_all_on_failure(worker, &shutdown),
        stop_all_on_failure(result, &shutdown),
    );
    gateway?;
    vote?;
    worker?;
    result?;
    Ok(())
}

/// Runs one component; if it fails, logs why and cancels `shutdown`, so
/// the whole process stops with the error instead of limping on.
async fn stop_all_on_failure<E: std::fmt::Display>(
    component: impl Future<Output = Result<(), E>>,
    shutdown: &CancellationToken,
) -> Result<(), E> {
    let outcome = component.await;
    if let Err(error) = &outcome {
        tracing::error!(%error, "a component failed; stopping votemesh");
        shutdown.cancel();
    }
    outcome
}
