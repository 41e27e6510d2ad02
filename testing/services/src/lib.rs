//! # votemesh-testing-services
//!
//! Starting votemesh's gRPC services inside a test, the one way every test
//! does: in a task of the test's runtime, on a loopback listener, over the
//! harness' real Redis and PostgreSQL, with the short probe intervals that
//! keep tests quick. Each launcher builds the service's dependencies
//! (a [`RedisQueue`], a migrated database) from the harness' server URLs
//! and hands them to the service crate's own `run`, as its `main` does.
//!
//! This crate sits above the generic harness, as linkerd's
//! `linkerd-app-integration` sits above the app: [`votemesh_testing`]
//! knows no service, this crate knows the services and the harness, and
//! nothing below depends on it. Like the harness it is a dev-dependency
//! only.
//!
//! ## Layout
//!
//! One file, one job: the settings a service under test runs with
//! ([`SERVED_BY`], [`PROBE_INTERVAL`], [`REFRESH_INTERVAL`],
//! [`cats_and_dogs`], [`worker_settings`]) and a launcher per service
//! ([`start_vote`], [`start_vote_named`], [`start_worker`],
//! [`start_result`]). A launcher returns the harness' [`TestServer`], bound
//! where it was asked ([`votemesh_testing::ANY_PORT`]: any free port).

use std::{net::SocketAddr, time::Duration};

use votemesh::{config::PollArgs, poll::Poll, queue::redis::RedisQueue, store};
use votemesh_worker::DrainSettings;

use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, TestServer};

/// The instance name a vote service under test reports in `served_by`.
pub const SERVED_BY: &str = "vote-under-test";
/// How often services under test check their dependencies.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a result service under test reads the tally.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// The default poll (`a` Cats, `b` Dogs).
pub fn cats_and_dogs() -> Poll {
    PollArgs::default()
        .poll()
        .unwrap_or_else(|error| panic!("the default poll is valid: {error}"))
}

/// Starts the vote service on `addr` (port 0: any) over `redis`, ready.
pub async fn start_vote(redis: &RedisServer, addr: SocketAddr) -> TestServer {
    start_vote_named(redis, addr, SERVED_BY).await
}

/// [`start_vote`] for a replica that answers `served_by` with `name`.
pub async fn start_vote_named(redis: &RedisServer, addr: SocketAddr, name: &str) -> TestServer {
    let queue = RedisQueue::new(&redis.url())
        .unwrap_or_else(|error| panic!("a queue for {}: {error}", redis.url()));
    TestServer::spawn(addr, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue,
            cats_and_dogs(),
            name.to_owned(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await
    .ready()
    .await
}

/// Starts the result service on `addr` (port 0: any) over `postgres`,
/// migrated first, ready.
pub async fn start_result(postgres: &PostgresServer, addr: SocketAddr) -> TestServer {
    let db = store::connect(&postgres.url())
        .await
        .unwrap_or_else(|error| panic!("connecting to {}: {error}", postgres.url()));
    store::migrate(&db)
        .await
        .unwrap_or_else(|error| panic!("migrating: {error}"));
    TestServer::spawn(addr, |listener, shutdown| {
        votemesh_result::run(listener, db, cats_and_dogs(), REFRESH_INTERVAL, shutdown)
    })
    .await
    .ready()
    .await
}

/// Drain settings for a worker under test named `worker_id`: small
/// batches and short pauses.
pub fn worker_settings(worker_id: &str) -> DrainSettings {
    let mut settings = DrainSettings::new(worker_id);
    settings.batch_size = 50;
    settings.probe_interval = PROBE_INTERVAL;
    settings.max_backoff = Duration::from_millis(300);
    settings
}

/// Starts a worker draining `redis` into `postgres` on any port. It does
/// not wait for readiness: some tests start it with a dependency down.
pub async fn start_worker(
    redis: &RedisServer,
    postgres: &PostgresServer,
    settings: DrainSettings,
) -> TestServer {
    let source = RedisQueue::new(&redis.url())
        .unwrap_or_else(|error| panic!("a queue for {}: {error}", redis.url()))
        .for_worker(&settings.worker_id);
    let db = store::connect(&postgres.url())
        .await
        .unwrap_or_else(|error| panic!("connecting to {}: {error}", postgres.url()));
    TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_worker::run(listener, source, db, settings, shutdown)
    })
    .await
}

/// The next tally on a WatchResults `stream` whose total is `total`;
/// panics if none comes `within`.
pub async fn until_total(
    stream: &mut tonic::Streaming<votemesh::proto::v1::Tally>,
    total: i64,
    within: Duration,
) -> votemesh::proto::v1::Tally {
    use tokio_stream::StreamExt;
    tokio::time::timeout(within, async {
        loop {
            let tally = stream.next().await.unwrap().unwrap();
            if tally.total == total {
                return tally;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tally with {total} votes within {within:?}"))
}
