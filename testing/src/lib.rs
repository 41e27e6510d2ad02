//! # votemesh-testing
//!
//! The test harness every votemesh crate's tests share. It is a
//! dev-dependency only, so nothing here widens the product's API or ships
//! in a binary.
//!
//! It is generic: it knows no votemesh service. It depends on the root
//! `votemesh` crate only for the shared types it hands out or drives
//! (`ConnectionUrl`, the gRPC client, the resolver interface, TLS files,
//! the shutdown token, the tally table). What starts the vote, worker and
//! result services sits one level above, in `votemesh-testing-services`
//! (`testing/services/`), as linkerd's `linkerd-app-integration` sits
//! above the app.
//!
//! Tests talk to real servers: [`RedisServer`] and [`PostgresServer`] start
//! Debian's `redis-server` and `initdb` + `postgres` on free loopback ports
//! in temporary directories (picking another port when one was taken
//! before the server bound it), and stop them when dropped. Tests stop and
//! restart them to see what the services do while a dependency is down.
//! Everything that waits is async (tokio processes, sockets and timers), so
//! the harness never blocks the test's runtime.
//!
//! ## Layout
//!
//! - [`redis`]: a throwaway `redis-server`, and raw commands against it.
//! - [`redis_cluster`]: a throwaway Redis Cluster of such servers (primaries
//!   and replicas), and the faults a test inflicts on it.
//! - [`postgres`]: a throwaway PostgreSQL cluster. As root (CI), PostgreSQL
//!   runs as the `postgres` account Debian's package creates.
//! - [`server`]: [`TestServer`], any server future running in the test on
//!   a loopback listener, to stop and restart at will.
//! - [`endpoints`]: a headless Service's address list, which tests change
//!   as replicas come and go.
//! - [`metrics`]: a component's `/metrics`, fetched and parsed as
//!   Prometheus does.
//! - [`probe`]: client-side checks (health, reflection) and [`wait_for`].
//! - [`logs`]: capturing the log events of code under test.
//! - [`tls`]: a throwaway CA and the certificates it issues (rcgen),
//!   mounted and rotated the way Kubernetes does a Secret.
//! - [`process`]: finding server binaries, starting them on a free port
//!   (or their old one, on a restart) without losing a race for it,
//!   waiting for them to start, and reading what a binary under test
//!   prints as it starts.

pub mod endpoints;
pub mod logs;
pub mod metrics;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod server;
pub mod tls;

use std::time::Duration;

use thiserror::Error;

pub use self::{
    endpoints::Endpoints,
    postgres::{PostgresServer, stored_tally},
    probe::wait_for,
    process::free_port,
    redis::RedisServer,
    redis_cluster::RedisCluster,
    server::{ANY_PORT, SERVER_WAIT, TestServer},
};

/// How long a server process may take to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A test server could not be started or driven.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// A server binary is not installed.
    #[error("{binary} not found (looked in {looked_in}); install it with `{install}`")]
    MissingBinary {
        /// The binary's name.
        binary: &'static str,
        /// Where it was looked for.
        looked_in: String,
        /// The command that installs it.
        install: &'static str,
    },
    /// Running a command or talking to a server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A server could not listen: another process holds one of its ports.
    #[error("{server} could not listen: another process holds its port ({detail})")]
    PortTaken {
        /// The server's name.
        server: &'static str,
        /// What the server said.
        detail: String,
    },
    /// A command ran but failed, or a server did not come up in time.
    #[error("{0}")]
    Failed(String),
}

impl HarnessError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
