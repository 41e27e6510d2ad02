//! `votemesh-vote`: the vote service binary. Parses configuration and runs
//! [`votemesh_vote::run`] until SIGTERM.

use anyhow::Context;
use clap::Parser;
use votemesh::{
    config::{self, PollArgs, RedisArgs},
    health::DEFAULT_PROBE_INTERVAL,
    queue::redis::RedisQueue,
    shutdown,
    telemetry::{self, TelemetryArgs},
};

/// Takes votes over gRPC and queues them in Redis.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "VOTE_LISTEN_ADDR", default_value = config::DEFAULT_VOTE_LISTEN, value_parser = config::parse_listen_addr)]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    poll: PollArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("vote", &cli.telemetry)?;
    let poll = cli.poll.poll().context("bad poll options")?;
    let redis_url = cli.redis.url_or_local();
    tracing::info!(redis = %redis_url, options = %poll.ids(), "starting the vote service");
    let queue = RedisQueue::new(&redis_url)?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
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
