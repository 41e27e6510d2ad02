//! `votemesh-vote`: the vote service binary. Parses [`Cli`] and runs
//! [`votemesh_vote::run`] until SIGTERM (or, with `--health-check`, asks a
//! running one whether it is ready), in the frame every component shares
//! ([`votemesh::component::run`]).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    admission::Admission, client::selfcheck, component, config, grpc::Listener,
    health::DEFAULT_PROBE_INTERVAL, queue::redis::RedisQueue, shutdown,
};
use votemesh_vote::cli::Cli;

// jemalloc, not glibc's malloc: votemesh::allocator says why.
#[cfg(feature = "jemalloc")]
votemesh::use_jemalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse_cli();
    let health_check = selfcheck::grpc(cli.listen, "", &cli.tls.identity);
    component::run("vote", &cli.server, health_check, serve(&cli)).await
}

/// Queues votes until SIGTERM.
async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let poll = cli
        .poll
        .poll()
        .context("bad poll options (OPTION_A, OPTION_B, EXTRA_OPTIONS)")?;
    let layout = cli.queue.layout();
    let listener = Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?
        .with_admission(Admission::new(&cli.server.admission));
    let queue = match cli.queue.cluster_nodes() {
        Some(seeds) => {
            tracing::info!(redis_cluster = %seeds.join(","), shards = layout.shards.count(), replica_acks = layout.replica_acks, options = %poll.labels(), "starting the vote service");
            RedisQueue::cluster(seeds, layout)?
        }
        None => {
            let redis_url = cli.redis.url_or_local();
            tracing::info!(redis = %redis_url, shards = layout.shards.count(), replica_acks = layout.replica_acks, options = %poll.labels(), "starting the vote service");
            RedisQueue::single(&redis_url, listener.tls(), layout)?
        }
    };
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
    Ok(())
}
