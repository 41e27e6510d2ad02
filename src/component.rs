//! The frame every component binary (vote, worker, result, gateway) shares
//! around its own start-up, so each `main.rs` says only what is its own.
//!
//! A `main` reads its `Cli` ([`crate::config::parse_cli`]) and hands [`run`]
//! the shared flags ([`ServerArgs`]) and two futures not yet started: its
//! self-check and its service. [`run`] then either makes the self-check
//! (`--health-check`: exit 0 when the running server is ready) or installs
//! telemetry and serves until the service returns (after SIGTERM: exit 0;
//! on an error: the error on stderr, exit 1).
//!
//! [`local_addr`] is how a component names a bound listener in its logs.

use std::{fmt, future::Future, process::ExitCode};

use clap::Args;
use tokio::net::TcpListener;

use crate::{
    admission::AdmissionArgs,
    client::selfcheck::{self, SelfCheckArgs},
    telemetry::{self, TelemetryArgs, TelemetryError},
};

/// The flags every component binary shares; each flattens it into its
/// `Cli` as `server`. Its listen address and TLS stay in its own `Cli`:
/// their variables, defaults and kind (server or client TLS) differ.
#[derive(Args, Clone, Debug, Default)]
pub struct ServerArgs {
    /// `--health-check`: ask the running server instead of starting one.
    #[command(flatten)]
    pub self_check: SelfCheckArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Who gets in when the server is busy.
    #[command(flatten)]
    pub admission: AdmissionArgs,
}

/// Runs the component named `component` (`vote`: its spans' service name is
/// `votemesh-vote` unless `OTEL_SERVICE_NAME` says otherwise) with the
/// shared flags `args`. With `--health-check` it awaits `health_check` and
/// reports it; otherwise it installs telemetry, then awaits `serve`, and
/// keeps telemetry until it returns (dropping it flushes the spans).
///
/// Neither future runs before it is awaited (an `async fn`'s body does
/// not), so `serve` may borrow the `Cli` and logs nothing before telemetry
/// is installed. An error, `serve`'s or telemetry's, is printed as `main`
/// returning it would print it (`Error: {error:?}`) and exits 1.
pub async fn run<E>(
    component: &str,
    args: &ServerArgs,
    health_check: impl Future<Output = Result<(), String>>,
    serve: impl Future<Output = Result<(), E>>,
) -> ExitCode
where
    E: fmt::Debug + From<TelemetryError>,
{
    if args.self_check.health_check {
        return selfcheck::report(health_check.await);
    }
    let outcome = match telemetry::init(component, &args.telemetry) {
        Ok(_telemetry) => serve.await,
        Err(error) => Err(E::from(error)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

/// Where `listener` listens, for a log line (`0.0.0.0:5000`; `unknown`
/// if the system cannot say).
pub fn local_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string())
}
