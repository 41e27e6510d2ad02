//! `votemesh-gateway`: the HTTP gateway binary. Parses [`Cli`] and runs
//! [`votemesh_gateway::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one's `/readyz`), in the frame every component shares
//! ([`votemesh::component::run`]).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{admission::Admission, client::Transport, component, config, shutdown, tls::Tls};
use votemesh_gateway::{Limits, cli::Cli, edge::Edge, readiness};

// jemalloc, not glibc's malloc: votemesh::allocator says why.
#[cfg(feature = "jemalloc")]
votemesh::use_jemalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse_cli();
    let health_check = readiness::check(cli.listen);
    component::run("gateway", &cli.server, health_check, serve(&cli)).await
}

/// Serves the browser pages and the API until SIGTERM.
async fn serve(cli: &Cli) -> anyhow::Result<()> {
    tracing::info!(vote = %cli.vote_addr, result = %cli.result_addr, "starting the gateway");
    let listener = votemesh::component::listen(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let admin = votemesh::component::listen(cli.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.admin_listen))?;
    let tls = Tls::from_args(&cli.tls).context("bad TLS settings")?;
    votemesh_gateway::run(
        listener,
        Some(admin),
        &cli.vote_addr,
        &cli.result_addr,
        Transport::from_tls(tls.as_ref()),
        Limits {
            edge: Edge::new(&cli.edge),
            admission: Admission::new(&cli.server.admission),
            connections: cli.connections.clone(),
            results: cli.results.clone(),
        },
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("gateway stopped");
    Ok(())
}
