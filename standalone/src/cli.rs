//! The command line of `votemesh` (all in one process). Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use clap::Parser;
use votemesh::{
    config::{self, DatabaseArgs, PollArgs, RedisArgs},
    telemetry::TelemetryArgs,
};

/// Runs votemesh's gateway, vote, worker and result services in one process.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address of the HTTP gateway (browser pages, JSON API).
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = votemesh_gateway::DEFAULT_LISTEN, value_parser = config::parse_listen_addr)]
    pub gateway_listen: std::net::SocketAddr,
    /// Address of the vote service.
    #[arg(long, env = "VOTE_LISTEN_ADDR", default_value = config::DEFAULT_VOTE_LISTEN, value_parser = config::parse_listen_addr)]
    pub vote_listen: std::net::SocketAddr,
    /// Address of the worker's health and stats.
    #[arg(long, env = "WORKER_LISTEN_ADDR", default_value = config::DEFAULT_WORKER_LISTEN, value_parser = config::parse_listen_addr)]
    pub worker_listen: std::net::SocketAddr,
    /// Address of the result service.
    #[arg(long, env = "RESULT_LISTEN_ADDR", default_value = config::DEFAULT_RESULT_LISTEN, value_parser = config::parse_listen_addr)]
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
