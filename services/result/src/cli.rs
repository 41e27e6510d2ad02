//! The command line of `votemesh-result`. Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use clap::Parser;
use votemesh::{
    config::{self, DatabaseArgs, PollArgs},
    telemetry::TelemetryArgs,
};

/// Serves the poll's tally over gRPC, on request and live.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Check the health of the server already running on the listen address
    /// (exit 0 when ready), instead of starting one.
    #[arg(long)]
    pub health_check: bool,
    /// Address to serve gRPC on.
    #[arg(long, env = "RESULT_LISTEN_ADDR", default_value = config::DEFAULT_RESULT_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// How often the tally is read for live watchers, in milliseconds.
    #[arg(long, env = "REFRESH_INTERVAL_MS", default_value_t = crate::DEFAULT_REFRESH_INTERVAL.as_millis() as u64)]
    pub refresh_interval_ms: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
