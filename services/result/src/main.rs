//! `votemesh-result`: the result service binary. Parses [`Cli`] and runs
//! [`votemesh_result::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one whether it is ready), in the frame every component shares
//! ([`votemesh::component::run`]).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    admission::Admission, client::selfcheck, component, config, grpc::Listener, shutdown,
    store::Databases, tls::TlsFiles,
};
use votemesh_result::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse_cli();
    let health_check = selfcheck::grpc(cli.listen, "", &cli.tls.identity);
    component::run("result", &cli.server, health_check, serve(&cli)).await
}

/// Serves the tally until SIGTERM.
async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let poll = cli
        .poll
        .poll()
        .context("bad poll options (OPTION_A, OPTION_B, EXTRA_OPTIONS)")?;
    let databases = Databases::connect(
        &cli.database_hosts.urls(&cli.database)?,
        TlsFiles::from_args(&cli.tls.identity)?.as_ref(),
    )
    .await?;
    tracing::info!(database = %databases, options = %poll.labels(), refresh_interval = ?cli.refresh.interval(), "starting the result service");
    let listener = Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?
        .with_admission(Admission::new(&cli.server.admission));
    votemesh_result::run(
        listener,
        databases,
        poll,
        cli.refresh.interval(),
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("result service stopped");
    Ok(())
}
