//! `votemesh-result`: the result service binary. Parses [`Cli`] and runs
//! [`votemesh_result::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one whether it is ready).

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use votemesh::{client::selfcheck, shutdown, store, telemetry};
use votemesh_result::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if cli.health_check {
        return Ok(selfcheck::report(selfcheck::grpc(cli.listen, "").await));
    }
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
        Duration::from_millis(cli.refresh_interval_ms.max(10)),
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("result service stopped");
    Ok(ExitCode::SUCCESS)
}
