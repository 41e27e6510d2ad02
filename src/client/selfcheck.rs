//! `--health-check`: a binary asks its own running server whether it is
//! ready, and exits 0 if so. Minimal container images have no shell or
//! probe tool, so Docker's HEALTHCHECK runs the binary itself.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use tonic_health::pb::health_check_response::ServingStatus;

use super::check_health_over;
use crate::{config::TlsArgs, tls::Tls};

/// The `--health-check` flag every binary has.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct SelfCheckArgs {
    /// Check the health of the server already running on the listen address
    /// (exit 0 when ready), instead of starting one.
    #[arg(long)]
    pub health_check: bool,
}

/// Longest a self-check may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The address to reach a server listening on `listen` from the same
/// host: loopback instead of the unspecified address.
pub fn loopback(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Asks the gRPC server on `listen` for the health of `service` (`""`:
/// readiness), over mutual TLS when `tls` names an identity (the server's
/// certificate must name what ours names first). `Ok` if SERVING;
/// otherwise why not.
pub async fn grpc(listen: SocketAddr, service: &str, tls: &TlsArgs) -> Result<(), String> {
    let addr = loopback(listen);
    let tls = Tls::from_args(tls).map_err(|error| error.to_string())?;
    let check = async {
        match check_health_over(addr, service, tls.as_ref()).await {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(status) => Err(format!("{addr} reports {}", status.as_str_name())),
            Err(status) => Err(format!(
                "health check of {addr} failed: {}",
                status.message()
            )),
        }
    };
    tokio::time::timeout(TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("{addr} did not answer within {TIMEOUT:?}")))
}

/// Prints the outcome of a self-check and turns it into the exit code.
pub fn report(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}
