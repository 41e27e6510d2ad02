//! # votemesh vote service
//!
//! Takes votes over gRPC (`votemesh.v1.VoteService`, port 5000) and queues
//! them for the worker:
//!
//! ```text
//! CastVote ─► intake: validate, stamp (id, time, trace, idempotency key) ─► queue.push (Redis LPUSH)
//!          ◄─ OK only after the queue accepted the vote; UNAVAILABLE when
//!             Redis cannot be reached or did not answer, RESOURCE_EXHAUSTED
//!             when it is full
//! ```
//!
//! ## Layout
//!
//! - [`cli`]: the binary's flags and environment variables.
//! - [`intake`]: the domain: a request becomes a vote, or a reason it cannot
//!   (the rules of a well-formed vote are the root crate's `votemesh::ballot`).
//! - [`server`]: the gRPC handler and the one mapping of errors to `Status`.
//! - [`run`]: wires health, the readiness probe and the server together.

pub mod cli;
pub mod intake;
pub mod server;

use std::time::Duration;

use votemesh::{
    grpc::{self, GrpcError},
    health::{self, Health},
    poll::Poll,
    proto::v1::vote_service_server::VoteServiceServer,
    queue::VoteSink,
    shutdown::CancellationToken,
    supervise,
};

pub use server::VoteApi;

/// The business service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "votemesh.v1.VoteService";

/// Serves the vote service on `listener` with `queue` until `shutdown`.
///
/// Readiness follows the queue: it is checked every `probe_interval`. A
/// failed push does not change it (see [`server`]).
pub async fn run<Q: VoteSink>(
    listener: impl Into<grpc::Listener>,
    queue: Q,
    poll: Poll,
    served_by: String,
    probe_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
    let queue = std::sync::Arc::new(queue);
    let probe_queue = queue.clone();
    let probe = health::spawn_readiness_probe(
        health.clone(),
        probe_interval,
        shutdown.clone(),
        move || {
            let queue = probe_queue.clone();
            async move {
                // The probe also samples the pool for /metrics.
                queue.record_pool_metrics();
                queue.ping().await.is_ok()
            }
        },
    );
    let api = VoteApi::new(queue, poll, served_by);
    let listener = listener.into();
    tracing::info!(addr = %listener, "vote service listening");
    let server = grpc::serve(
        listener,
        VoteServiceServer::new(api),
        health,
        health_service,
        shutdown.clone(),
    );
    supervise::serve_with(server, vec![("readiness probe", probe)], shutdown).await
}
