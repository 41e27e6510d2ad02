//! # votemesh result service
//!
//! Serves the poll's tally over gRPC (`votemesh.v1.ResultService`, port
//! 5001), from the `tally` table the worker keeps, never from a scan of
//! the votes; with several databases (`DB_HOSTS`), from the sum of their
//! tallies:
//!
//! ```text
//! any database's NOTIFY, or every interval ─► tally reader (1 per process)
//!     ─► read every tally table, sum per option ─► label with the poll
//!     ─► watch channel ─► every WatchResults stream, and GetResults (latest in memory)
//! ```
//!
//! ## Layout
//!
//! - [`cli`]: the binary's flags and environment variables.
//! - [`tally`]: the domain: stored counts become a labelled [`tally::Tally`].
//! - [`feed`]: reads the tally when a worker notifies a commit (and every
//!   interval as a fallback) and publishes it when it changes; its success
//!   or failure is the service's readiness.
//! - [`server`]: the gRPC handler and the mapping of errors to `Status`.
//! - [`run`]: wires them together.

pub mod cli;
pub mod feed;
pub mod server;
pub mod tally;

use std::time::Duration;

use votemesh::{
    grpc::{self, GrpcError},
    health::Health,
    poll::Poll,
    proto::v1::result_service_server::ResultServiceServer,
    shutdown::CancellationToken,
    store::Databases,
    supervise,
};

/// The business service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "votemesh.v1.ResultService";
/// GetResults answers from the feed's tally while it was confirmed within
/// this many refresh intervals; an older one (the feed is failing) makes
/// it read the database itself.
pub const MAX_AGE_IN_INTERVALS: u32 = 2;
/// Default pause between two reads of the tally by the feed (a fallback on
/// PostgreSQL, where a worker's commit wakes the feed at once).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest pause between two reads of the tally, whatever is configured.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(10);

/// Serves the result service on `listener`, from the sum of `databases`'
/// tallies, until `shutdown`; open WatchResults streams end when it comes.
pub async fn run(
    listener: impl Into<grpc::Listener>,
    databases: impl Into<Databases>,
    poll: Poll,
    refresh_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
    let databases = databases.into();
    let (feed, poller) = feed::spawn(
        databases.clone(),
        poll.clone(),
        refresh_interval,
        health.clone(),
        shutdown.clone(),
    );
    let api = server::ResultApi::new(
        databases,
        poll,
        feed,
        refresh_interval * MAX_AGE_IN_INTERVALS,
        shutdown.clone(),
    );
    let listener = listener.into();
    tracing::info!(addr = %listener, "result service listening");
    let server = grpc::serve(
        listener,
        ResultServiceServer::new(api),
        health,
        health_service,
        shutdown.clone(),
    );
    supervise::serve_with(server, vec![("tally poller", poller)], shutdown).await
}
