//! The command line of `votemesh-result`. Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use std::time::Duration;

use clap::{Args, Parser};
use votemesh::{
    component::ServerArgs,
    config::{self, DatabaseArgs, DatabaseHostsArgs, PollArgs, TlsServerArgs},
};

/// Serves the poll's tally over gRPC, on request and live.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "RESULT_LISTEN_ADDR", default_value = config::DEFAULT_RESULT_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// How often the tally is read for live watchers.
    #[command(flatten)]
    pub refresh: RefreshArgs,
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Several databases that share the votes.
    #[command(flatten)]
    pub database_hosts: DatabaseHostsArgs,
    /// The poll's options.
    #[command(flatten)]
    pub poll: PollArgs,
    /// Mutual TLS (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE; unset:
    /// plaintext), who may call, and the plaintext health listener.
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// `--health-check`, logs and traces.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// How often the tally is read for live watchers; shared with the
/// all-in-one binary, which runs the same result service.
#[derive(Args, Clone, Debug)]
pub struct RefreshArgs {
    /// How often the tally is read for live watchers, in milliseconds
    /// (at least 10).
    #[arg(long, env = "REFRESH_INTERVAL_MS", default_value_t = crate::DEFAULT_REFRESH_INTERVAL.as_millis() as u64)]
    pub refresh_interval_ms: u64,
}

impl RefreshArgs {
    /// The interval, at least [`crate::MIN_REFRESH_INTERVAL`].
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms).max(crate::MIN_REFRESH_INTERVAL)
    }
}
