//! `--health-check`: a binary asks its own running server whether it is
//! ready, and exits 0 if so. Minimal container images have no shell or
//! probe tool, so Docker's HEALTHCHECK runs the binary itself.

use std::{
    net::{Ipv4Addr, SocketAddr},
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
/// host: loopback instead of the unspecified address. For `[::]` that is
/// `127.0.0.1` too: a server there listens dual-stack, or on `0.0.0.0`
/// where the host has no IPv6 ([`crate::component::listen`]), and the
/// IPv4 loopback reaches it either way.
pub fn loopback(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        (Ipv4Addr::LOCALHOST, listen.port()).into()
    } else {
        listen
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_asked_on_the_ipv4_loopback_and_others_as_given() {
        for any in ["[::]:5000", "0.0.0.0:5000"] {
            let listen: SocketAddr = any.parse().unwrap();
            assert_eq!(loopback(listen), "127.0.0.1:5000".parse().unwrap(), "{any}");
        }
        for given in ["[::1]:5000", "127.0.0.1:5000", "10.1.2.3:5000"] {
            let listen: SocketAddr = given.parse().unwrap();
            assert_eq!(loopback(listen), listen);
        }
    }
}
