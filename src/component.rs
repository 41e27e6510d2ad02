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
//! [`listen`] opens a server's listener the same way in every binary
//! (`[::]` is dual-stack: IPv6 and IPv4 on one socket); [`local_addr`] is
//! how a component names a bound listener in its logs.

use std::{
    fmt,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    process::ExitCode,
};

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

/// How many connections the system may hold waiting to be accepted (as
/// tokio's own `TcpListener::bind`; std's `bind` listens with 128). A
/// burst of new connections beyond it has its handshakes dropped, and
/// each client tries again a second later: after a 300 ms stall at 2,000
/// requests/s, the soak's generator opened 1,000-1,500 at once
/// (docs/SOAK.md, the tenth run).
const BACKLOG: i32 = 1024;

/// Opens a server's listener on `addr`, as every votemesh binary does.
///
/// `[::]` (any IPv6 address, the components' default) listens
/// dual-stack: one socket takes IPv6 and IPv4 clients alike, with
/// `IPV6_V6ONLY` turned off whatever the system's default, so the same
/// image answers its probes on IPv4-only, IPv6-only and dual-stack
/// clusters, and `[::1]` and `127.0.0.1` both reach it. On a host without
/// IPv6 (a kernel booted with `ipv6.disable=1`) or without dual-stack
/// sockets, it listens on `0.0.0.0` instead and logs a warning. Any other
/// address (`0.0.0.0`, `127.0.0.1`, `[::1]`) is bound as given. Call inside
/// a tokio runtime.
pub async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_with(addr, dual_stack)?)
}

/// Why a listening socket was not opened ([`open_listening`]): only the
/// dual-stack attempt tells the two apart, and falls back to IPv4 when
/// the host cannot.
#[derive(Debug)]
enum ListenError {
    /// The host cannot: no such sockets (IPv6), none that also take IPv4,
    /// or no such address to bind.
    Unavailable(io::Error),
    /// It could, but binding failed (the port is taken, not allowed).
    Bind(io::Error),
}

/// [`listen`], with the dual-stack socket opened by `dual_stack` (given
/// the port), so that tests can play a host without IPv6.
fn listen_with(
    addr: SocketAddr,
    dual_stack: impl FnOnce(u16) -> Result<std::net::TcpListener, ListenError>,
) -> io::Result<std::net::TcpListener> {
    let listener = if addr.is_ipv6() && addr.ip().is_unspecified() {
        match dual_stack(addr.port()) {
            Ok(listener) => listener,
            Err(ListenError::Bind(error)) => return Err(error),
            Err(ListenError::Unavailable(error)) => {
                let ipv4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
                tracing::warn!(%error, %addr, fallback = %ipv4, "no dual-stack IPv6 here; listening on IPv4 only");
                bind_listening(ipv4)?
            }
        }
    } else {
        bind_listening(addr)?
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A socket listening on `addr` as given, with [`BACKLOG`].
fn bind_listening(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    open_listening(addr, false)
        .map_err(|(ListenError::Unavailable(error) | ListenError::Bind(error))| error)
}

/// A socket on `[::]:port` that takes IPv4 clients too (IPV6_V6ONLY off).
fn dual_stack(port: u16) -> Result<std::net::TcpListener, ListenError> {
    open_listening(
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        true,
    )
}

/// A socket listening on `addr` with [`BACKLOG`], IPV6_V6ONLY turned off
/// when `dual_stack`. Its error says whether the host cannot (no such
/// sockets, no dual-stack ones, no such address to bind) or binding
/// failed (the port is taken, not allowed).
fn open_listening(
    addr: SocketAddr,
    dual_stack: bool,
) -> Result<std::net::TcpListener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};

    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ListenError::Unavailable)?;
    if dual_stack {
        socket
            .set_only_v6(false)
            .map_err(ListenError::Unavailable)?;
    }
    // As std and tokio do on Unix: a restarted server can take its port
    // back while old connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true).map_err(ListenError::Bind)?;
    socket
        .bind(&addr.into())
        .map_err(|error| match error.kind() {
            io::ErrorKind::AddrNotAvailable => ListenError::Unavailable(error),
            _ => ListenError::Bind(error),
        })?;
    socket.listen(BACKLOG).map_err(ListenError::Bind)?;
    Ok(socket.into())
}

/// Where `listener` listens, for a log line (`0.0.0.0:5000`; `unknown`
/// if the system cannot say).
pub fn local_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string())
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv6Addr, TcpStream},
        time::Duration,
    };

    use super::*;

    fn any_v6() -> SocketAddr {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    }

    #[tokio::test]
    async fn any_ipv6_address_takes_ipv4_and_ipv6_clients() {
        let has_ipv6 = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok();
        let listener = listen(any_v6()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        TcpStream::connect((Ipv4Addr::LOCALHOST, addr.port())).expect("IPv4 loopback");
        if has_ipv6 {
            assert!(addr.is_ipv6(), "dual-stack where the host has IPv6: {addr}");
            TcpStream::connect((Ipv6Addr::LOCALHOST, addr.port())).expect("IPv6 loopback");
        } else {
            eprintln!("this host has no IPv6 loopback; only IPv4 was checked");
        }
    }

    #[test]
    fn without_ipv6_it_listens_on_ipv4() {
        let unavailable = |_| {
            Err(ListenError::Unavailable(io::Error::from(
                io::ErrorKind::Unsupported,
            )))
        };
        let listener = listen_with(any_v6(), unavailable).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::UNSPECIFIED, "{addr}");

        let taken = |_| Err(ListenError::Bind(io::Error::from(io::ErrorKind::AddrInUse)));
        let error = listen_with(any_v6(), taken).unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::AddrInUse,
            "a taken port is an error, not a reason to listen elsewhere"
        );
    }

    #[tokio::test]
    async fn other_addresses_are_bound_as_given() {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = listen(loopback).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
    }

    /// Connections that arrive faster than the server accepts them (a
    /// burst after a stall) wait in the system's queue, up to [`BACKLOG`]:
    /// none is dropped to try again a second later, whatever address the
    /// listener was given. (Capped by the system's `somaxconn`: on a
    /// system that holds fewer, the burst is made smaller to match.)
    #[test]
    fn a_burst_of_connections_waits_to_be_accepted_on_any_address() {
        let held = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(4096)
            .min(BACKLOG as usize);
        let burst = 300.min(held.saturating_sub(10));
        for addr in [
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        ] {
            let listener = listen_with(addr, dual_stack).unwrap();
            let port = listener.local_addr().unwrap().port();
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            // Nothing accepts meanwhile: a handshake the queue cannot hold
            // is dropped, and its connect waits a second for the retry.
            let clients: Vec<TcpStream> = (0..burst)
                .map(|n| {
                    TcpStream::connect_timeout(&target, Duration::from_millis(500)).unwrap_or_else(
                        |error| panic!("{addr}: connection {n} of {burst}: {error}"),
                    )
                })
                .collect();
            assert_eq!(clients.len(), burst);
        }
    }
}
