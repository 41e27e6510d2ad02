//! The command line of `votemesh-loadgen`. Every flag also reads an
//! environment variable (shown by `--help`), read with the shared rules of
//! [`votemesh::config::parse_cli`] (an empty variable is unset).

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use votemesh::{config, telemetry::TelemetryArgs};

use crate::target::Mode;

/// Default address of the gateway (form and JSON modes).
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:3000";
/// Default listen address of `--noop-server`.
pub const DEFAULT_NOOP_LISTEN: &str = "127.0.0.1:5000";

/// Casts votes at a votemesh vote service or gateway and reports
/// throughput and latency percentiles; or, with --noop-server, serves a
/// VoteService that does nothing (the gRPC floor to compare with).
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Serve the no-op VoteService on --listen instead of generating load.
    #[arg(long, env = "LOADGEN_NOOP_SERVER")]
    pub noop_server: bool,
    /// Serve the live results floor on --listen instead of generating
    /// load: SSE streams that get one tally event each per
    /// --sse-floor-interval-ms, with nothing else (the streams bench's
    /// reference).
    #[arg(long, env = "LOADGEN_SSE_FLOOR_SERVER", conflicts_with = "noop_server")]
    pub sse_floor_server: bool,
    /// Serve the refusal floor on --listen instead of generating load:
    /// every vote answered as the overloaded gateway answers it (503,
    /// Retry-After), with nothing else (the soak's overload reference).
    #[arg(long, env = "LOADGEN_REFUSAL_FLOOR_SERVER", conflicts_with_all = ["noop_server", "sse_floor_server"])]
    pub refusal_floor_server: bool,
    /// Serve the gateway floor on --listen instead of generating load:
    /// JSON and form votes translated to CastVote calls to --vote-addr by
    /// hyper and tonic alone (the gateway goal's reference).
    #[arg(long, env = "LOADGEN_GATEWAY_FLOOR_SERVER", conflicts_with_all = ["noop_server", "sse_floor_server", "refusal_floor_server"])]
    pub gateway_floor_server: bool,
    /// How often --sse-floor-server writes an event to every stream, in milliseconds.
    #[arg(long, env = "SSE_FLOOR_INTERVAL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_floor_interval_ms: u64,
    /// Where --noop-server or one of the floor servers listens.
    #[arg(long, env = "NOOP_LISTEN_ADDR", default_value = DEFAULT_NOOP_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: SocketAddr,
    /// Which route votes take: CastVote over gRPC, or the gateway's form or JSON vote (or `results`: GetResults calls, a read load).
    #[arg(long, env = "LOADGEN_MODE", value_enum, default_value_t = Mode::Grpc)]
    pub mode: Mode,
    /// The vote service (grpc mode).
    #[arg(long, env = "VOTE_ADDR", default_value = config::DEFAULT_VOTE_ADDR, value_parser = config::parse_endpoint)]
    pub vote_addr: String,
    /// The result service (results mode: GetResults read load).
    #[arg(long, env = "RESULT_ADDR", default_value = config::DEFAULT_RESULT_ADDR, value_parser = config::parse_endpoint)]
    pub result_addr: String,
    /// The gateway (form and json modes).
    #[arg(long, env = "GATEWAY_URL", default_value = DEFAULT_GATEWAY_URL, value_parser = config::parse_endpoint)]
    pub gateway_url: String,
    /// Simulated voters; they vote in turn, each voter's votes one at a time in a closed loop.
    #[arg(long, env = "LOADGEN_VOTERS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub voters: u64,
    /// Chance that a voter voting again switches option (0 to 1).
    #[arg(long, env = "LOADGEN_CHANGE", default_value_t = 0.1, value_parser = parse_fraction)]
    pub change: f64,
    /// Voter ids are <prefix>-<n>.
    #[arg(long, env = "LOADGEN_VOTER_PREFIX", default_value = "loadgen")]
    pub voter_prefix: String,
    /// Closed loop: this many callers, each sending when its last vote is answered.
    #[arg(long, short = 'c', env = "LOADGEN_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Open loop: this many votes per second whatever the answers do (latency counts from when each was due).
    #[arg(long, env = "LOADGEN_RATE", value_parser = parse_rate, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Open loop: most votes outstanding at once.
    #[arg(long, env = "LOADGEN_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Run this long (such as 500ms, 10s, 2m).
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many votes instead.
    #[arg(long, short = 'n', env = "LOADGEN_COUNT", conflicts_with_all = ["duration", "forever"])]
    pub count: Option<u64>,
    /// Run until SIGTERM or Ctrl-C (the vote bot).
    #[arg(long, env = "LOADGEN_FOREVER", conflicts_with = "duration")]
    pub forever: bool,
    /// gRPC mode: HTTP/2 connections the calls are spread over.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// When the target does not answer yet, retry every 2 s instead of exiting (the vote bot).
    #[arg(long, env = "LOADGEN_WAIT_FOR_TARGET")]
    pub wait_for_target: bool,
    /// Not on a terminal: print a progress line this often (0: never). On a terminal the line updates every second.
    #[arg(long, env = "LOADGEN_PROGRESS_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub progress_every: Duration,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Mutual TLS for the gRPC modes: the identity presented to a vote or
    /// result service that requires it (unset: plaintext).
    #[command(flatten)]
    pub tls: votemesh::config::TlsArgs,
}

impl Cli {
    /// The address votes go to in the chosen mode.
    pub fn target_address(&self) -> &str {
        match self.mode {
            Mode::Grpc => &self.vote_addr,
            Mode::Results => &self.result_addr,
            Mode::Form | Mode::Json => &self.gateway_url,
        }
    }
}

/// Parses a duration such as `250ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 500ms, 10s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{raw:?}: {error}"))
}

fn parse_fraction(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{raw:?} is not a fraction between 0 and 1")),
    }
}

/// The slowest open-loop rate: one vote every 1,000 s (slower rates would
/// put the next due time beyond what `Instant` can hold).
const MIN_RATE: f64 = 0.001;

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(value) if value >= MIN_RATE && value.is_finite() => Ok(value),
        _ => Err(format!(
            "{raw:?} is not a number of votes per second of at least {MIN_RATE}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rate_means_open_loop_and_excludes_concurrency() {
        let cli = Cli::try_parse_from(["loadgen", "--rate", "5", "--forever"]).unwrap();
        assert_eq!(cli.rate, Some(5.0));
        assert!(Cli::try_parse_from(["loadgen", "--rate", "5", "-c", "3"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--rate", "1e-20"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--rate", "0.001"]).is_ok());
        assert!(Cli::try_parse_from(["loadgen", "--vote-addr", "vote:5000"]).is_err());
    }
}
