//! The command line of `votemesh` (all in one process). Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.
//!
//! Its servers listen on loopback by default, as a developer's server
//! should on a laptop on someone else's network, and on host ports a stock
//! machine leaves free (macOS's AirPlay Receiver holds 5000 and 7000): the
//! ports compose and Tilt use on the host too. The component binaries keep
//! the ports inside containers (vote 5000, result 5001, worker 8080) and
//! listen on every address.

use clap::Parser;
use votemesh::{
    config::{self, DatabaseArgs, PollArgs, RedisArgs},
    telemetry::TelemetryArgs,
};

/// Default address of the gateway: loopback, port 3000.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:3000";
/// Default address of the vote service: loopback, port 15000 (not 5000,
/// which macOS's AirPlay Receiver holds).
pub const DEFAULT_VOTE_LISTEN: &str = "127.0.0.1:15000";
/// Default address of the result service: loopback, port 15001.
pub const DEFAULT_RESULT_LISTEN: &str = "127.0.0.1:15001";
/// Default address of the worker's health and stats: loopback, port 18080.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:18080";

/// Runs votemesh's gateway, vote, worker and result services in one process.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address of the HTTP gateway (browser pages, JSON API); `[::]:3000`
    /// or `0.0.0.0:3000` opens it to other machines.
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = DEFAULT_GATEWAY_LISTEN, value_parser = config::parse_listen_addr)]
    pub gateway_listen: std::net::SocketAddr,
    /// Address of the vote service.
    #[arg(long, env = "VOTE_LISTEN_ADDR", default_value = DEFAULT_VOTE_LISTEN, value_parser = config::parse_listen_addr)]
    pub vote_listen: std::net::SocketAddr,
    /// Address of the worker's health and stats.
    #[arg(long, env = "WORKER_LISTEN_ADDR", default_value = DEFAULT_WORKER_LISTEN, value_parser = config::parse_listen_addr)]
    pub worker_listen: std::net::SocketAddr,
    /// Address of the result service.
    #[arg(long, env = "RESULT_LISTEN_ADDR", default_value = DEFAULT_RESULT_LISTEN, value_parser = config::parse_listen_addr)]
    pub result_listen: std::net::SocketAddr,
    /// Where the Redis queue is.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The poll's options.
    #[command(flatten)]
    pub poll: PollArgs,
    /// How often the tally is read for live watchers.
    #[command(flatten)]
    pub refresh: votemesh_result::cli::RefreshArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::Cli;

    #[test]
    fn takes_the_result_services_refresh_interval() {
        let names = votemesh::config::env_names(&Cli::command());
        assert!(
            names.iter().any(|name| name == "REFRESH_INTERVAL_MS"),
            "{names:?}"
        );
        let cli = Cli::try_parse_from(["votemesh", "--refresh-interval-ms", "40"]).unwrap();
        assert_eq!(cli.refresh.interval(), Duration::from_millis(40));
        let cli = Cli::try_parse_from(["votemesh", "--refresh-interval-ms", "1"]).unwrap();
        assert_eq!(
            cli.refresh.interval(),
            votemesh_result::MIN_REFRESH_INTERVAL
        );
    }
}
