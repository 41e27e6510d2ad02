//! `votemesh-vote`: the vote service binary. Parses [`Cli`] and runs
//! [`votemesh_vote::run`] until SIGTERM (or, with `--health-check`, asks a
//! running one whether it is ready).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    client::selfcheck, config, health::DEFAULT_PROBE_INTERVAL, queue::redis::RedisQueue, shutdown,
    telemetry,
};
use votemesh_vote::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli: Cli = config::parse_cli();
    if cli.self_check.health_check {
        return Ok(selfcheck::report(
            selfcheck::grpc(cli.listen, "", &cli.tls.identity).await,
        ));
    }
    let _telemetry = telemetry::init("vote", &cli.telemetry)?;
    let poll = cli
        .poll
        .poll()
        .context("bad poll options (OPTION_A, OPTION_B, EXTRA_OPTIONS)")?;
    let redis_url = cli.redis.url_or_local();
    tracing::info!(redis = %redis_url, options = %poll.labels(), "starting the vote service");
    let listener = votemesh::grpc::Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?;
    let queue = RedisQueue::with_tls(&redis_url, listener.tls())?;
    votemesh_vote::run(
        listener,
        queue,
        poll,
        config::instance_name(),
        DEFAULT_PROBE_INTERVAL,
        shutdown::on_signal(),
    )
    .await?;
    tracing::info!("vote service stopped");
    Ok(ExitCode::SUCCESS)
}
