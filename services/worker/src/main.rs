//! `votemesh-worker`: the worker binary. Parses configuration and runs
//! [`votemesh_worker::run`] (which migrates the database) until SIGTERM.

use anyhow::Context;
use clap::Parser;
use votemesh::{
    config::{self, DatabaseArgs, RedisArgs},
    queue::redis::RedisQueue,
    shutdown, store,
    telemetry::{self, TelemetryArgs},
};
use votemesh_worker::DrainSettings;

/// Drains the Redis vote queue into Postgres.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to serve gRPC health and stats on.
    #[arg(long, env = "WORKER_LISTEN_ADDR", default_value = config::DEFAULT_WORKER_LISTEN, value_parser = config::parse_listen_addr)]
    listen: std::net::SocketAddr,
    /// This worker's id (names its processing list); default: the host name.
    #[arg(long, env = "WORKER_ID")]
    worker_id: Option<String>,
    /// Most votes written per transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = votemesh_worker::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("worker", &cli.telemetry)?;
    let worker_id = cli.worker_id.unwrap_or_else(config::instance_name);
    let redis_url = cli.redis.url_or_local();
    let database_url = cli.database.url_or_local();
    tracing::info!(%worker_id, redis = %redis_url, database = %database_url, "starting the worker");

    let shutdown = shutdown::on_signal();
    let db = store::connect(&database_url).await?;
    let queue = RedisQueue::new(&redis_url)?.for_worker(&worker_id);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let mut settings = DrainSettings::new(worker_id);
    settings.batch_size = cli.batch_size.max(1);
    votemesh_worker::run(listener, queue, db, settings, shutdown).await?;
    tracing::info!("worker stopped");
    Ok(())
}
