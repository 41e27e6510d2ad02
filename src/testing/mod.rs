//! Test support: real `redis-server` and PostgreSQL processes, each on a
//! free loopback port in its own temporary directory, stopped when dropped.
//!
//! [`probe`] holds the client-side checks tests share (health, reflection,
//! waiting for a condition); [`TestServer`] runs one votemesh service in
//! the test on a loopback port, to stop and restart at will.
//!
//! Tests can stop and restart a server ([`RedisServer::stop`],
//! [`PostgresServer::restart`]) to check behaviour while a dependency is
//! down. A missing binary is an error that says how to install it.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (as CI
//! does), `initdb` and `postgres` run as the `postgres` account that
//! Debian's package creates, in a directory that account owns.

mod postgres;
pub mod probe;
mod redis;
mod server;

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use thiserror::Error;

pub use self::{
    postgres::PostgresServer,
    redis::RedisServer,
    server::{SERVER_WAIT, TestServer},
};

/// How long a server may take to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A test server could not be started.
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
    /// Running a command failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran but failed, or a server did not come up in time.
    #[error("{0}")]
    Failed(String),
}

impl HarnessError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, HarnessError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("binding a free port"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(HarnessError::io("reading a free port"))
}

/// Finds `binary` on PATH or in one of `extra_dirs`.
fn find_binary(
    binary: &'static str,
    extra_dirs: &[PathBuf],
    install: &'static str,
) -> Result<PathBuf, HarnessError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let dirs: Vec<&Path> = path_dirs
        .iter()
        .chain(extra_dirs)
        .map(PathBuf::as_path)
        .collect();
    dirs.iter()
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| HarnessError::MissingBinary {
            binary,
            looked_in: dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            install,
        })
}

/// Waits until `ready` answers true, or fails after [`START_TIMEOUT`].
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), HarnessError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(HarnessError::Failed(format!(
        "{what} did not become ready within {START_TIMEOUT:?}"
    )))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}
