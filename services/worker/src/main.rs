//! `votemesh-worker`: the worker binary. Parses [`Cli`] and runs
//! [`votemesh_worker::run`] (which migrates the database) until SIGTERM
//! (or, with `--health-check`, asks a running one whether it is ready).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    client::selfcheck, config, queue::redis::RedisQueue, shutdown, store, telemetry, tls::TlsFiles,
};
use votemesh_worker::{DrainSettings, cli::Cli};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli: Cli = config::parse_cli();
    if cli.self_check.health_check {
        return Ok(selfcheck::report(
            selfcheck::grpc(cli.listen, "", &cli.tls.identity).await,
        ));
    }
    let _telemetry = telemetry::init("worker", &cli.telemetry)?;
    let worker_id = cli
        .worker_id
        .unwrap_or_else(votemesh_worker::default_worker_id);
    let redis_url = cli.redis.url_or_local();
    let database_url = store::with_tls_files(
        &cli.database.url_or_local()?,
        TlsFiles::from_args(&cli.tls.identity)?.as_ref(),
    );
    tracing::info!(%worker_id, redis = %redis_url, database = %database_url, batch_size = cli.batch_size, "starting the worker");

    let shutdown = shutdown::on_signal();
    let db = store::connect(&database_url).await?;
    let listener = votemesh::grpc::Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?;
    let queue = RedisQueue::with_tls(&redis_url, listener.tls())?.for_worker(&worker_id);
    let mut settings = DrainSettings::new(worker_id);
    settings.batch_size = cli.batch_size.max(1);
    votemesh_worker::run(listener, queue, db, settings, shutdown).await?;
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}
