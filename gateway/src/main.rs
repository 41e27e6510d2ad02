//! `votemesh-gateway`: the HTTP gateway binary. Parses configuration and
//! runs [`votemesh_gateway::run`] until SIGTERM.

use anyhow::Context;
use clap::Parser;
use votemesh::{
    config, shutdown,
    telemetry::{self, TelemetryArgs},
};

/// Serves votemesh's pages, JSON API and live results over HTTP.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to serve HTTP on.
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = votemesh_gateway::DEFAULT_LISTEN, value_parser = config::parse_listen_addr)]
    listen: std::net::SocketAddr,
    /// The vote service.
    #[arg(long, env = "VOTE_ADDR", default_value = votemesh_gateway::DEFAULT_VOTE_ADDR)]
    vote_addr: String,
    /// The result service.
    #[arg(long, env = "RESULT_ADDR", default_value = votemesh_gateway::DEFAULT_RESULT_ADDR)]
    result_addr: String,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("gateway", &cli.telemetry)?;
    tracing::info!(vote = %cli.vote_addr, result = %cli.result_addr, "starting the gateway");
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    votemesh_gateway::run(
        listener,
        &cli.vote_addr,
        &cli.result_addr,
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
}
