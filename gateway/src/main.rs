//! `votemesh-gateway`: the HTTP gateway binary. Parses [`Cli`] and runs
//! [`votemesh_gateway::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one's `/readyz`).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    client::{Transport, selfcheck},
    shutdown, telemetry,
    tls::Tls,
};
use votemesh_gateway::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli: Cli = votemesh::config::parse_cli();
    if cli.self_check.health_check {
        return Ok(selfcheck::report(
            votemesh_gateway::readiness::check(cli.listen).await,
        ));
    }
    let _telemetry = telemetry::init("gateway", &cli.telemetry)?;
    tracing::info!(vote = %cli.vote_addr, result = %cli.result_addr, "starting the gateway");
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let tls = Tls::from_args(&cli.tls).context("bad TLS settings")?;
    votemesh_gateway::run(
        listener,
        &cli.vote_addr,
        &cli.result_addr,
        Transport::from_tls(tls.as_ref()),
        votemesh_gateway::edge::Edge::new(&cli.edge),
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}
