//! The command line of `votemesh-gateway`. Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use clap::Parser;
use votemesh::{component::ServerArgs, config};

/// Serves votemesh's pages, JSON API and live results over HTTP.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address to serve HTTP on.
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = crate::DEFAULT_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// Address of the operator port: /metrics, /healthz and /readyz, for
    /// Prometheus and the kubelet; no public route should reach it.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN_ADDR", default_value = crate::DEFAULT_ADMIN_LISTEN, value_parser = config::parse_listen_addr)]
    pub admin_listen: std::net::SocketAddr,
    /// The vote service.
    #[arg(long, env = "VOTE_ADDR", default_value = config::DEFAULT_VOTE_ADDR, value_parser = config::parse_endpoint)]
    pub vote_addr: String,
    /// The result service.
    #[arg(long, env = "RESULT_ADDR", default_value = config::DEFAULT_RESULT_ADDR, value_parser = config::parse_endpoint)]
    pub result_addr: String,
    /// Mutual TLS towards the services (unset: plaintext).
    #[command(flatten)]
    pub tls: config::TlsArgs,
    /// Limits on votes at the edge.
    #[command(flatten)]
    pub edge: crate::edge::EdgeArgs,
    /// Limits on connections.
    #[command(flatten)]
    pub connections: crate::ConnectionArgs,
    /// Limits on the live results streams.
    #[command(flatten)]
    pub results: crate::events::ResultsArgs,
    /// `--health-check`, logs and traces.
    #[command(flatten)]
    pub server: ServerArgs,
}
