//! `votemesh-gateway`: the HTTP gateway binary. Parses [`Cli`] and runs
//! [`votemesh_gateway::run`] until SIGTERM (or, with `--health-check`, asks
//! a running one's `/readyz`), in the frame every component shares
//! ([`votemesh::component::run`]).

use std::process::ExitCode;

use anyhow::Context;
use votemesh::{admission::Admission, client::Transport, component, config, shutdown, tls::Tls};
use votemesh_gateway::{Limits, cli::Cli, edge::Edge, readiness};

/// jemalloc, not glibc's malloc. The gateway's memory follows its open
/// connections: an open-loop burst (each vote-service stall holds up
/// hundreds of requests, each on its own browser connection) takes it
/// from 15 to about 85 MiB, and glibc kept nearly all of that after the
/// connections closed, creeping on from there. With jemalloc the same
/// 5-minute run peaked at 29 MiB, and the gateway spent about 12 % less
/// CPU per vote (docs/BENCHMARKS.md#soak has the side-by-side runs).
/// Built without the default feature `jemalloc`, it uses the system's
/// malloc, which heap profilers such as heaptrack hook
/// (tools/heap-profile.sh).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main` runs (`_RJEM_MALLOC_CONF` in
/// the environment still overrides them). With its defaults the gateway
/// never handed back what a stall's burst of connections had used: its
/// RSS climbed by 0.9 MiB a minute at 2,000 votes/s, while a heap
/// profile of the same run showed the memory in use flat (3-16 MiB,
/// no trend). So freed pages go back to the kernel within about a
/// second (`dirty_decay_ms`; `muzzy_decay_ms:0`: purged outright, not
/// lazily freed pages that still count in RSS until the kernel wants
/// them), by a background thread rather than only when an arena next
/// allocates, and all from one arena rather than one per thread (the
/// gateway runs two worker threads). The four were measured together,
/// not one by one; the RSS then fell back after each burst, and the
/// gateway's CPU per vote, against the vote service's in the same run,
/// did not rise (docs/BENCHMARKS.md#soak, "The gateway's allocator").
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &u8 =
    &b"background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

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
