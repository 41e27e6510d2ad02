//! `votemesh-result`: the result service binary. Parses configuration and
//! runs [`votemesh_result::run`] until SIGTERM.

use anyhow::Context;
use clap::Parser;
use votemesh::{
    config::{self, DatabaseArgs, PollArgs},
    shutdown, store,
    telemetry::{self, TelemetryArgs},
};

/// Serves the poll's tally over gRPC, on request and live.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "RESULT_LISTEN_ADDR", default_value = config::DEFAULT_RESULT_LISTEN, value_parser = config::parse_listen_addr)]
    listen: std::net::SocketAddr,
    /// How often the tally is read for live watchers, in milliseconds.
    #[arg(long, env = "REFRESH_INTERVAL_MS", default_value_t = votemesh_result::DEFAULT_REFRESH_INTERVAL.as_millis() as u64)]
    refresh_interval_ms: u64,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    poll: PollArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("result", &cli.telemetry)?;
    let poll = cli.poll.poll().context("bad poll options")?;
    let database_url = cli.database.url_or_local();
    tracing::info!(database = %database_url, options = %poll.ids(), "starting the result service");
    let db = store::connect(&database_url).await?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    votemesh_result::run(
        listener,
        db,
        poll,
        std::time::Duration::from_millis(cli.refresh_interval_ms.max(10)),
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("result service stopped");
    Ok(())
}
