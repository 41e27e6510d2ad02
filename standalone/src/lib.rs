//! # votemesh, all in one process
//!
//! Runs the vote service, the worker and the result service side by side,
//! each on its own port as in a real deployment, so clients cannot tell the
//! difference:
//!
//! ```text
//! :5000 vote ─► queue (Redis, or in-process) ─► worker (:8080) ─► database ─► result :5001
//! ```
//!
//! With no Redis configured the queue is in-process ([`MemoryQueue`]); with
//! no database configured it is a SQLite file. The same SeaORM entities and
//! migrations serve both databases.

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
use votemesh_worker::DrainSettings;

/// The listeners of the three servers.
#[derive(Debug)]
pub struct Listeners {
    /// The vote service's.
    pub vote: TcpListener,
    /// The worker's (health and stats).
    pub worker: TcpListener,
    /// The result service's.
    pub result: TcpListener,
}

impl Listeners {
    /// Binds the three addresses.
    pub async fn bind(
        vote: SocketAddr,
        worker: SocketAddr,
        result: SocketAddr,
    ) -> std::io::Result<Self> {
        Ok(Self {
            vote: bind(vote).await?,
            worker: bind(worker).await?,
            result: bind(result).await?,
        })
    }

    /// Three listeners on free loopback ports (for tests).
    pub async fn loopback() -> std::io::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::bind(any, any, any).await
    }

    /// The bound addresses: vote, worker, result.
    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.vote.local_addr()?,
            self.worker.local_addr()?,
            self.result.local_addr()?,
        ))
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    })
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
}

/// Runs the three services until `shutdown`, then drains them all.
pub async fn run(
    listeners: Listeners,
    backends: Backends,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), SystemError> {
    let db = store::connect(&backends.database).await?;
    match &backends.redis {
        Some(url) => {
            let queue = RedisQueue::new(url)?;
            let source = queue.for_worker(&settings.instance);
            run_with(listeners, queue, source, db, settings, shutdown).await
        }
        None => {
            let queue = MemoryQueue::new();
            run_with(listeners, queue.clone(), queue, db, settings, shutdown).await
        }
    }
}

async fn run_with<Q: VoteSink, S: VoteSource>(
    listeners: Listeners,
    sink: Q,
    source: S,
    db: DatabaseConnection,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), SystemError> {
    // Migrate before the result service starts asking for the tally.
    if let Err(error) = store::migrate(&db).await {
        tracing::warn!(%error, "cannot migrate yet; the worker will keep trying");
    }
    let vote = votemesh_vote::run(
        listeners.vote,
        sink,
        settings.poll.clone(),
        settings.instance.clone(),
        DEFAULT_PROBE_INTERVAL,
        shutdown.clone(),
    );
    let worker = votemesh_worker::run(
        listeners.worker,
        source,
        db.clone(),
        DrainSettings::new(settings.instance.clone()),
        shutdown.clone(),
    );
    let result = votemesh_result::run(
        listeners.result,
        db,
        settings.poll,
        settings.refresh_interval,
        shutdown.clone(),
    );
    let (vote, worker, result) = tokio::join!(vote, worker, result);
    vote?;
    worker?;
    result?;
    Ok(())
}
