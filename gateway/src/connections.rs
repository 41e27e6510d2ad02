//! The gateway's HTTP/1.1 connections: accepted, bounded and served here
//! (axum's own `serve` has no timeouts and no cap, so a client that
//! connects and sends nothing, or half a request, held a connection and
//! its memory for ever).
//!
//! ```text
//! accept ─► a connection slot free (MAX_CONNECTIONS)? ─ no ─► closed at once,
//!                                                              counted, logged
//!        ─► hyper HTTP/1.1: the request head must arrive within
//!           HEADER_READ_TIMEOUT, the first one and every later one on a
//!           kept-alive connection (so an idle connection closes after it too)
//!        ─► the router, with the peer's address (ConnectInfo)
//!        ─► the response: written by hyper, or handed over (a results
//!           stream) and written on the bare socket by a task of its own
//! ```
//!
//! A response marked [`HandOver`] (a results stream) is taken from hyper
//! once its head is ready: hyper's connection is taken apart, and a task
//! of the stream's own writes it on the socket ([`crate::handover`]), still
//! holding the connection's slot.
//!
//! A response being written (a results stream, SSE) is not limited here:
//! streams stay open as designed and are counted by their own permits.
//! What ends a stream whose client is stuck or gone is the kernel: every
//! accepted socket gets `TCP_USER_TIMEOUT` ([`USER_TIMEOUT`]: data sent
//! but not acknowledged for that long, or a receive window that stays
//! shut, closes the connection; Linux 5.11 and later count zero-window
//! probes against it) and TCP keep-alive ([`KEEP_ALIVE_IDLE`], so a
//! vanished peer of an idle connection is found too). The writer then sees
//! a write error and drops the response, with its stream's permit.
//! On shutdown every connection is asked to close once its current
//! request is answered; the caller bounds how long that may take.
//!
//! Metrics: `votemesh_http_connections` (open now),
//! `votemesh_http_connections_refused_total` (closed at once because the
//! cap was reached).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use clap::{Args, builder::TypedValueParser};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::Gauge;
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tower::ServiceExt;
use votemesh::shutdown::CancellationToken;

use crate::handover::{self, HandOver, HandedOver, Handoff};

/// Open connections per gateway before new ones are closed at once. Each
/// idle connection costs about 12 KiB (3,000 silent ones held 36 MiB);
/// the results streams (at most `RESULTS_MAX_STREAMS`) need one each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// How long a client has to send a request's head, on a new connection
/// and between the requests of a kept-alive one.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `TCP_USER_TIMEOUT` of every accepted socket: a connection whose sent
/// data stays unacknowledged this long (a client that vanished, or one
/// whose receive window stays shut because it stopped reading) is closed
/// by the kernel. Linux only; elsewhere keep-alive alone applies.
pub const USER_TIMEOUT: Duration = Duration::from_secs(45);
/// TCP keep-alive of every accepted socket: the first probe after this
/// long without traffic...
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...then one probe per this long until the peer answers (or
/// [`USER_TIMEOUT`] passes).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// At most one "connection cap reached" warning per this long.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Limits on the gateway's connections.
#[derive(Args, Clone, Debug)]
pub struct ConnectionArgs {
    /// Open connections before new ones are closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's head, on a new
    /// connection and on an idle kept-alive one.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown`, then asks
/// every connection to close after its current request and waits for them
/// (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ConnectionArgs,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Handles made before the recorder exists would stay no-ops.
    votemesh::metrics::install();
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let open = metrics::gauge!("votemesh_http_connections");
    let refused = metrics::counter!("votemesh_http_connections_refused_total");
    let cap_warning = RateLimitedWarning::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection reset or aborted before it was accepted:
                // that one is gone, the next may be taken at once.
                Err(error) if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(error) => {
                    // Out of file descriptors or memory: not the
                    // listener's end, but taking the next at once would
                    // spin. (MAX_CONNECTIONS should stay below the
                    // process's file descriptor limit, `ulimit -n`.)
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            cap_warning.warn(limits.max_connections);
            drop(stream);
            continue;
        };
        let place = OpenConnection::new(slot, open.clone());
        let _ = stream.set_nodelay(true);
        if let Err(error) = detect_dead_peers(&stream) {
            tracing::debug!(%error, %peer, "cannot set the socket's timeouts");
        }
        let handoff = Arc::new(Handoff::default());
        let service = hyper::service::service_fn({
            let router = router.clone();
            let handoff = handoff.clone();
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let handoff = handover::may_hand_over(&request).then(|| handoff.clone());
                let response = router.clone().oneshot(request);
                async move {
                    let response: axum::response::Response = match response.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    match handoff {
                        Some(handoff) if response.extensions().get::<HandOver>().is_some() => {
                            // Left for the connection's task; the error
                            // ends hyper's connection without a byte
                            // written or the socket closed.
                            handoff.put(response);
                            Err(HandedOver)
                        }
                        _ => Ok(response),
                    }
                }
            }
        });
        let mut connection = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut closing = std::pin::pin!(shutdown.cancelled());
            let mut asked_to_close = false;
            let ended = std::future::poll_fn(|cx| {
                if !asked_to_close && closing.as_mut().poll(cx).is_ready() {
                    // Close once the current request is answered (a
                    // response handed over is still written).
                    Pin::new(&mut connection).graceful_shutdown();
                    asked_to_close = true;
                }
                Pin::new(&mut connection).poll(cx)
            })
            .await;
            // Looked at only when hyper's connection ended with an error:
            // a handover is one.
            let Some(response) = ended.is_err().then(|| handoff.take()).flatten() else {
                if let Err(error) = ended {
                    // A timed-out head, a reset, a malformed request:
                    // the client's doing, worth a debug line only.
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            };
            // hyper holds no byte of an earlier response here: it reads a
            // connection's next request only once the previous response
            // is flushed (`handover` says more).
            let socket = connection.into_parts().io.into_inner();
            // A task of its own, so that this one's memory (hyper's
            // connection, laid out in it) goes now.
            tokio::spawn(handover::write_response(socket, response, place));
        });
    }
    drop(listener);
    // Every connection, a handed-over stream too, holds its slot until it
    // ends: all of them back means all closed.
    let _ = slots
        .acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// An open connection's place under `MAX_CONNECTIONS`, counted in
/// `votemesh_http_connections` while it lives (it moves with a handed-over
/// stream to the stream's task).
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    open: Gauge,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.increment(1.0);
        Self { _slot: slot, open }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// Sets [`USER_TIMEOUT`] and TCP keep-alive on an accepted socket, so the
/// kernel closes a connection whose peer is gone or stopped reading.
pub fn detect_dead_peers(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEP_ALIVE_IDLE)
            .with_interval(KEEP_ALIVE_INTERVAL),
    )?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    Ok(())
}

/// One warning per [`CAP_WARNING_EVERY`], however often the cap is hit.
#[derive(Default)]
struct RateLimitedWarning {
    /// When the last warning was logged (ms after `since`), plus one.
    last_ms: AtomicU64,
    since: std::sync::OnceLock<Instant>,
}

impl RateLimitedWarning {
    fn warn(&self, cap: usize) {
        let since = *self.since.get_or_init(Instant::now);
        let now = since.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now - last < CAP_WARNING_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                max_connections = cap,
                "connection cap reached: new connections are closed at once (MAX_CONNECTIONS)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_a_user_timeout_and_keep_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        detect_dead_peers(&accepted).unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEP_ALIVE_IDLE);
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            KEEP_ALIVE_INTERVAL
        );
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
