//! `votemesh`: the whole system in one process.
//!
//! With no `REDIS_HOST`/`REDIS_URL` the queue is in-process; with no
//! `DB_HOST`/`DATABASE_URL` the database is the SQLite file
//! `votemesh.sqlite` in the current directory.

use anyhow::Context;
use votemesh::{
    config::{self, ConnectionUrl},
    shutdown, telemetry,
};
use votemesh_standalone::{Backends, Listeners, Settings, cli::Cli, local_url};

// jemalloc, not glibc's malloc: votemesh::allocator says why.
#[cfg(feature = "jemalloc")]
votemesh::use_jemalloc!();

/// The gateway's URL for a person: `localhost` when it listens on
/// loopback or everywhere (a browser tries both `::1` and `127.0.0.1`).
fn browser_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        format!("http://localhost:{}", addr.port())
    } else {
        local_url("http", addr)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = config::parse_cli();
    let _telemetry = telemetry::init("standalone", &cli.telemetry)?;
    let poll = cli
        .poll
        .poll()
        .context("bad poll options (OPTION_A, OPTION_B, EXTRA_OPTIONS)")?;
    let backends = Backends {
        redis: cli.redis.configured(),
        database: cli
            .database
            .configured()?
            .unwrap_or_else(|| ConnectionUrl::new(config::DEFAULT_SQLITE_URL)),
    };
    let listeners = Listeners::bind(
        cli.gateway_listen,
        cli.vote_listen,
        cli.worker_listen,
        cli.result_listen,
    )
    .await?;
    let addrs = listeners.addrs()?;
    let queue = backends
        .redis
        .as_ref()
        .map_or_else(|| "in-process queue".to_owned(), ToString::to_string);
    tracing::info!(
        %queue,
        database = %backends.database,
        options = %poll.labels(),
        refresh_interval = ?cli.refresh.interval(),
        gateway = %addrs.gateway,
        vote = %addrs.vote,
        worker = %addrs.worker,
        result = %addrs.result,
        "votemesh starting"
    );
    println!("votemesh is running (Ctrl-C to stop):");
    println!("  vote in a browser  {}/", browser_url(addrs.gateway));
    println!(
        "  live results       {}/results",
        browser_url(addrs.gateway)
    );
    println!(
        "  vote service       {}  votemesh.v1.VoteService (gRPC)",
        local_url("grpc", addrs.vote)
    );
    println!(
        "  result service     {}  votemesh.v1.ResultService (gRPC)",
        local_url("grpc", addrs.result)
    );
    println!(
        "  worker             {}  health + votemesh.v1.WorkerService (gRPC)",
        local_url("grpc", addrs.worker)
    );
    if let Some(open_up) = addrs.how_to_open_up() {
        tracing::info!(
            set = %open_up,
            "listening on loopback only: other machines cannot connect"
        );
        println!("  only this machine can connect; to let others in, set any of: {open_up}");
    }
    println!("  queue: {queue}; database: {}", backends.database);
    let settings = Settings {
        poll,
        instance: config::instance_name(),
        refresh_interval: cli.refresh.interval(),
    };
    votemesh_standalone::run(listeners, backends, settings, shutdown::on_signal()).await?;
    tracing::info!("votemesh stopped");
    Ok(())
}
