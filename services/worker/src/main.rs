//! `votemesh-worker`: the worker binary. Parses [`Cli`] and runs
//! [`votemesh_worker::run`] (which migrates the database) until SIGTERM
//! (or, with `--health-check`, asks a running one whether it is ready), in
//! the frame every component shares ([`votemesh::component::run`]).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{
    admission::Admission,
    client::selfcheck,
    component, config,
    grpc::Listener,
    queue::{
        link::{self, Target},
        redis::RedisQueue,
        sharded::{self, ShardedWorkerQueue},
    },
    shutdown,
    store::{Databases, ShardMap},
    tls::TlsFiles,
};
use votemesh_worker::{DrainSettings, cli::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse_cli();
    let health_check = selfcheck::grpc(cli.listen, "", &cli.tls.identity);
    component::run("worker", &cli.server, health_check, serve(&cli)).await
}

/// Drains the queue into the database until SIGTERM.
async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let worker_id = cli
        .worker_id
        .clone()
        .unwrap_or_else(votemesh_worker::default_worker_id);
    let layout = cli.queue.layout();
    let databases = Databases::connect(
        &cli.database_hosts.urls(&cli.database)?,
        TlsFiles::from_args(&cli.tls.identity)?.as_ref(),
    )
    .await?;
    // Each database must hold a shard: say so now, not at the first batch.
    ShardMap::split(databases.len(), layout.shards)?;
    let shutdown = shutdown::on_signal();
    let listener = Listener::bind(cli.listen, &cli.tls)
        .await
        .context("cannot set up the gRPC listener")?
        .with_admission(Admission::new(&cli.server.admission));
    let mut settings = DrainSettings::new(worker_id.clone());
    settings.batch_size = cli.batch_size.max(1);
    settings.linger = std::time::Duration::from_millis(cli.batch_linger_ms);
    settings.shards = layout.shards;
    let sharded = cli.queue.cluster_nodes().is_some() || layout.shards.count() > 1;
    if !sharded {
        let redis_url = cli.redis.url_or_local();
        tracing::info!(%worker_id, redis = %redis_url, database = %databases, batch_size = cli.batch_size, batch_linger_ms = cli.batch_linger_ms, "starting the worker");
        let queue = RedisQueue::with_tls(&redis_url, listener.tls())?.for_worker(&worker_id);
        votemesh_worker::run(listener, queue, databases, settings, shutdown).await?;
    } else {
        let target = match cli.queue.cluster_nodes() {
            Some(seeds) => Target::Cluster(Box::new(link::cluster_client(seeds)?)),
            None => Target::Single {
                url: cli.redis.url_or_local(),
                tls: listener.tls(),
            },
        };
        tracing::info!(%worker_id, redis = ?target, shards = layout.shards.count(), database = %databases, batch_size = cli.batch_size, batch_linger_ms = cli.batch_linger_ms, "starting the worker on a sharded queue");
        let queue = ShardedWorkerQueue::new(target, layout, &worker_id)?;
        // The heartbeat renews the shard leases.
        settings.heartbeat_interval = sharded::LEASE_RENEW_INTERVAL;
        votemesh_worker::run(listener, queue, databases, settings, shutdown).await?;
    }
    tracing::info!("worker stopped");
    Ok(())
}
