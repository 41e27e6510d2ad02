//! `votemesh-loadgen`: parses [`Cli`], checks the target, runs the load
//! and prints the summary (or, with `--noop-server`, serves the no-op
//! VoteService until SIGTERM; with `--sse-floor-server`, the live results
//! floor; with `--refusal-floor-server`, the refusal floor; with
//! `--gateway-floor-server`, the gateway floor).

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use votemesh::{client::Transport, config, shutdown, telemetry, tls::Tls};
use votemesh_loadgen::{
    cli::Cli,
    gateway_floor, noop, refusal_floor,
    run::{self, Pace, Progress, Stop},
    sse_floor,
    summary::{PaceLabel, Summary},
    target::{Target, TargetError},
    voters::Voters,
};

/// How long the vote bot waits between checks of a target not up yet.
const TARGET_RETRY: Duration = Duration::from_secs(2);

/// Logs when `RUST_LOG` is not set: the generator's own lines, and only
/// warnings from the shared client (not a line per connection).
const DEFAULT_LOG_FILTER: &str = "warn,votemesh_loadgen=info";

fn main() -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_none_or(|value| value.is_empty()) {
        // SAFETY: no other thread exists yet (the runtime starts below).
        unsafe { std::env::set_var("RUST_LOG", DEFAULT_LOG_FILTER) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<ExitCode> {
    let cli: Cli = config::parse_cli();
    // Logs go to stderr: stdout carries the summary (`--json`).
    let _telemetry = telemetry::init_for_tool("loadgen", &cli.telemetry)?;
    let shutdown = shutdown::on_signal();
    if cli.noop_server
        || cli.sse_floor_server
        || cli.refusal_floor_server
        || cli.gateway_floor_server
    {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        if cli.noop_server {
            tracing::info!(addr = %cli.listen, "no-op VoteService listening");
            noop::serve(listener, shutdown).await?;
        } else if cli.gateway_floor_server {
            tracing::info!(addr = %cli.listen, vote_addr = %cli.vote_addr, "gateway floor listening");
            gateway_floor::serve(listener, &cli.vote_addr, shutdown).await?;
        } else if cli.refusal_floor_server {
            tracing::info!(addr = %cli.listen, "refusal floor listening");
            refusal_floor::serve(listener, shutdown).await;
        } else {
            tracing::info!(addr = %cli.listen, "live results floor listening");
            let interval = Duration::from_millis(cli.sse_floor_interval_ms);
            sse_floor::serve(listener, interval, shutdown).await;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let address = cli.target_address().to_owned();
    let tls = Tls::from_args(&cli.tls).context("bad TLS settings")?;
    let transport = Transport::from_tls(tls.as_ref());
    let (target, options) = loop {
        match Target::connect(cli.mode, &address, cli.connections as usize, &transport).await {
            Ok(connected) => break connected,
            Err(error @ TargetError::Unreachable { .. }) if cli.wait_for_target => {
                tracing::warn!(%error, "target not answering yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
                    () = tokio::time::sleep(TARGET_RETRY) => {}
                }
            }
            Err(error) => {
                eprintln!("votemesh-loadgen: {error}");
                return Ok(ExitCode::from(2));
            }
        }
    };
    let voters = Arc::new(Voters::new(
        &cli.voter_prefix,
        cli.voters,
        cli.change,
        options,
    )?);
    let (pace, label) = match cli.rate {
        Some(rate) => (
            Pace::Open {
                rate,
                max_in_flight: cli.max_in_flight,
            },
            PaceLabel::Open(rate),
        ),
        None => {
            let concurrency = cli.concurrency.min(cli.voters) as usize;
            (Pace::Closed { concurrency }, PaceLabel::Closed(concurrency))
        }
    };
    let stop = match (cli.count, cli.forever) {
        (Some(count), _) => Stop::Count(count),
        (None, true) => Stop::Never,
        (None, false) => Stop::After(cli.duration),
    };
    tracing::info!(mode = %cli.mode, target = %address, voters = cli.voters, ?pace, ?stop, "casting votes");
    let (recorder, elapsed) = run::run(
        target,
        voters.clone(),
        pace,
        stop,
        Progress::for_stderr(cli.progress_every),
        shutdown,
    )
    .await;
    let summary = Summary::new(
        &cli.mode.to_string(),
        &address,
        label,
        &voters,
        &recorder,
        elapsed,
    );
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(if summary.ok == 0 && summary.sent > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
