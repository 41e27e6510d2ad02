//! `votemesh-result`: the result service binary. Parses [`Cli`] and runs
//! [`votemesh_result::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one whether it is ready).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{client::selfcheck, config, shutdown, store, telemetry, tls::TlsFiles};
use votemesh_result::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli: Cli = config::parse_cli();
    if cli.self_check.health_check {
        return Ok(selfcheck::report(
            selfcheck::grpc(cli.listen, "", &cli.tls.identity).await,
        ));
    }
    let _telemetry = telemetry::init("result", &cli.telemetry)?;
    let poll = cli
        .poll
        .poll()
        .context("bad poll options (OPTION_A, OPTION_B, EXTRA_OPTIONS)")?;
    let database_url = store::with_tls_files(
        &cli.database.url_or_local()?,
        TlsFiles::from_args(&cli.tls.identity)?.as_ref(),
    );
    tracing::info!(database = %database_url, options = %poll.labels(), refresh_interval = ?cli.refresh.interval(), "starting the result service");
    let db = store::connect(&database_url).await?;
    let listener = votemesh::grpc::Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?;
    votemesh_result::run(
        listener,
        db,
        poll,
        cli.refresh.interval(),
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("result service stopped");
    Ok(ExitCode::SUCCESS)
}
