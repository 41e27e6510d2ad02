//! # votemesh worker
//!
//! Moves votes from the queue into the database, in batches, so that each
//! voter's newest vote is counted exactly once:
//!
//! ```text
//! queue ──take_batch──► [processing list] ──parse──► votes ──apply (one txn)──► votes + tally
//!   ▲                          │                      └─ malformed ─► dead-letter list
//!   └── reclaim orphans        └── ack_batch (remove it) only after the commit
//! ```
//!
//! It also serves gRPC health (readiness follows Redis, the databases and
//! the drain loop's last attempt, set by the probe alone) and
//! `votemesh.v1.WorkerService/GetStats` on port 8080.
//!
//! ## Layout
//!
//! - [`cli`]: the binary's flags and environment variables.
//! - [`batch`]: pure logic: parse messages, keep each voter's newest vote.
//! - [`apply`]: applies a batch to `votes` and `tally` in one transaction
//!   (the schema and connecting are the root crate's `votemesh::store`).
//! - [`drain`]: the loop: take, apply, acknowledge; backoff while a
//!   dependency is down; heartbeat and reclaim of dead workers' batches.
//! - [`stats`]: counters behind GetStats.
//! - [`server`]: the gRPC handler of `WorkerService`.
//! - [`run`]: wires them together.

pub mod apply;
pub mod batch;
pub mod cli;
pub mod drain;
pub mod server;
pub mod stats;

use std::{sync::Arc, time::Duration};

use votemesh::{
    grpc::{self, GrpcError},
    health::{self, Health},
    proto::v1::worker_service_server::WorkerServiceServer,
    queue::VoteSource,
    shutdown::CancellationToken,
    store::Databases,
    supervise,
};

pub use drain::DrainSettings;

/// The business service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "votemesh.v1.WorkerService";

/// Runs the drain loop and the health/stats server until `shutdown`; the
/// batch in hand is finished (committed and acknowledged) before returning.
///
/// The server answers at once; the drain loop first runs the database
/// migrations, retrying until the databases answer (and stops the worker
/// if one holds other shards than `settings.shards` and their order give
/// it: `votemesh::store::shard_map`).
pub async fn run<S: VoteSource>(
    listener: impl Into<grpc::Listener>,
    source: S,
    databases: impl Into<Databases>,
    settings: DrainSettings,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
    let databases = databases.into();
    let source = Arc::new(source);
    let stats = Arc::new(stats::Stats::default());
    let status = Arc::new(drain::DrainStatus::default());

    // The one writer of readiness: the queue and every database answer and the drain
    // loop's last attempt succeeded.
    let probe = {
        let (source, databases, status) = (source.clone(), databases.clone(), status.clone());
        health::spawn_readiness_probe(
            health.clone(),
            settings.probe_interval,
            shutdown.clone(),
            move || {
                let (source, databases, status) =
                    (source.clone(), databases.clone(), status.clone());
                async move {
                    // The probe also samples the queue and the pools for /metrics.
                    if let Ok(backlog) = source.backlog().await {
                        backlog.record();
                    }
                    source.record_pool_metrics();
                    databases.record_pool_metrics();
                    status.is_ok() && source.ping().await.is_ok() && databases.ping().await.is_ok()
                }
            },
        )
    };
    let worker_id = settings.worker_id.clone();
    let source_for_leave = source.clone();
    let heartbeat = tokio::spawn(drain::heartbeat(
        source.clone(),
        settings.heartbeat_interval,
        shutdown.clone(),
    ));
    let drainer = tokio::spawn(
        drain::Drainer::new(source.clone(), databases, stats.clone(), status, settings)
            .run(shutdown.clone()),
    );

    let listener = listener.into();
    tracing::info!(addr = %listener, %worker_id, "worker listening");
    let api = server::WorkerApi::new(source, stats, worker_id);
    let server = grpc::serve(
        listener,
        WorkerServiceServer::new(api),
        health,
        health_service,
        shutdown.clone(),
    );
    let tasks = vec![
        ("drain loop", drainer),
        ("heartbeat", heartbeat),
        ("readiness probe", probe),
    ];
    let served = supervise::serve_with(server, tasks, shutdown).await;
    // The last batch is written: hand the shards over now rather than
    // when the leases expire.
    if let Err(error) = source_for_leave.leave().await {
        tracing::warn!(%error, "could not hand this worker's shards over; the others take them when its leases expire");
    }
    served
}

/// The worker id of this process on the instance (host or pod) named
/// `instance`: `<instance>-<process id>`, so two workers on one machine
/// never share a processing list.
pub fn worker_id(instance: &str) -> String {
    format!("{instance}-{}", std::process::id())
}

/// The worker id used when none is configured: [`worker_id`] of the host
/// name (the pod's name on Kubernetes).
pub fn default_worker_id() -> String {
    worker_id(&votemesh::config::instance_name())
}

/// Default most votes written per transaction. A batch is what the queue
/// holds, up to this: under a light load batches stay small and votes are
/// written as they come; under a backlog each batch pays its fixed costs
/// (the round trips to Redis and PostgreSQL, the transaction, about 4 ms of
/// CPU across the processes on the benchmark machine) once for this many
/// votes. 1024 drained 1.4 to 1.8 times as fast as 256 did
/// (docs/BENCHMARKS.md, "Drain"); above it the gain is small.
pub const DEFAULT_BATCH_SIZE: usize = 1024;
/// Default pause after a batch that emptied the queue, before the next
/// take: under a steady trickle the worker keeps up, so each take would
/// find only what came during the last write, and every small batch pays
/// a batch's fixed costs. Waiting this long first gathers more into one
/// batch, for at most this much later freshness
/// (docs/BENCHMARKS.md, "The worker under a steady load").
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(10);
/// Default wait for a vote when the queue is empty.
pub const DEFAULT_IDLE_WAIT: Duration = Duration::from_millis(250);
