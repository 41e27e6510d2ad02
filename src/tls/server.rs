//! The server side of mutual TLS: a stream of accepted connections for
//! tonic's `serve_with_incoming`. Each TCP connection is handshaken in its
//! own task (a slow or hostile client holds up no one else), with the
//! server configuration current at that moment ([`Tls::server_config`],
//! so a rotated certificate applies to new connections). A client that
//! presents no certificate, or one the CA did not issue, or an expired
//! one, fails the handshake and never reaches gRPC.
//!
//! At most [`MAX_CONCURRENT_HANDSHAKES`] handshakes run at once per
//! listener; while that many are in progress the listener accepts nothing
//! more, so further connections wait in the kernel's accept backlog (and
//! are refused by the kernel once it is full) rather than each getting a
//! task for up to [`HANDSHAKE_TIMEOUT`]. Waiting, not dropping: a burst
//! of real clients is served as handshakes finish, and a flood of idle
//! connections costs a bounded number of tasks. A refused handshake is
//! logged at debug level and counted
//! (`votemesh_tls_handshake_failures_total`, by `reason`).
//!
//! Plaintext connections go through the same type ([`ServerIo::Plain`]),
//! so a server is assembled one way whether TLS is on or off. Every
//! request carries a [`PeerInfo`] in its extensions: the caller's address
//! and, over TLS, the names in its verified certificate, which
//! [`super::authorize`] reads.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{Tls, certificate_names};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once on one listener (see the
/// module's doc). A handshake costs a task and a few tens of KiB; 1024 of
/// them is far above what healthy clients need (connections are long-lived
/// and reconnect every `MAX_CONNECTION_AGE`) and small enough to bound
/// what idle connections can hold.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 1024;
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;
/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Who is calling: in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The TCP addresses of the connection.
    pub tcp: TcpConnectInfo,
    /// The DNS and URI names of the caller's verified certificate; empty
    /// over plaintext.
    pub names: Arc<[String]>,
}

/// One accepted connection, plaintext or TLS.
#[derive(Debug)]
pub enum ServerIo {
    /// A plaintext connection (TLS not configured).
    Plain(TcpStream),
    /// A TLS connection whose client certificate was verified.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Self::Plain(tcp) => PeerInfo {
                tcp: tcp.connect_info(),
                names: Arc::new([]),
            },
            Self::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let names = session
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(certificate_names)
                    .unwrap_or_default();
                PeerInfo {
                    tcp: tcp.connect_info(),
                    names: names.into(),
                }
            }
        }
    }
}

/// The accepted connections of `listener`: plaintext when `tls` is `None`,
/// TLS-handshaken otherwise. The listener closes when the stream is
/// dropped (tonic drops it when shutdown begins).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Tls>,
) -> Pin<Box<dyn Stream<Item = io::Result<ServerIo>> + Send>> {
    incoming_with_limit(listener, tls, MAX_CONCURRENT_HANDSHAKES)
}

/// [`incoming`] with at most `max_handshakes` handshakes at once (tests
/// use a small number).
pub fn incoming_with_limit(
    listener: TcpListener,
    tls: Option<Tls>,
    max_handshakes: usize,
) -> Pin<Box<dyn Stream<Item = io::Result<ServerIo>> + Send>> {
    match tls {
        None => Box::pin(
            tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|accepted| accepted.map(ServerIo::Plain)),
        ),
        Some(tls) => {
            let (accepted, handshaken) = mpsc::channel(ACCEPTED_BACKLOG);
            let accepting = tokio::spawn(accept(
                listener,
                tls,
                accepted,
                Arc::new(Semaphore::new(max_handshakes.max(1))),
            ));
            Box::pin(Handshaken {
                connections: ReceiverStream::new(handshaken),
                accepting,
                ended: false,
            })
        }
    }
}

/// The TLS listener's connections, and the owner of the task that accepts
/// and handshakes them (mini-redis's `DbDropGuard`): the task ends when the
/// stream is dropped (tonic drops it when shutdown begins), and if the task
/// ends first (a panic: it has no other way to), the stream says why at
/// error and ends, so the server stops taking connections and
/// `grpc::serve` returns an error (the process exits non-zero and is
/// restarted) instead of listening with no one accepting.
struct Handshaken {
    connections: ReceiverStream<ServerIo>,
    accepting: JoinHandle<()>,
    /// Whether the stream has ended (and said why): polled again, it stays
    /// ended without polling the finished task.
    ended: bool,
}

impl Stream for Handshaken {
    type Item = io::Result<ServerIo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.connections).poll_next(cx) {
            Poll::Ready(Some(connection)) => Poll::Ready(Some(Ok(connection))),
            Poll::Ready(None) => {
                // The sender went with the task: it has ended.
                match Pin::new(&mut self.accepting).poll(cx) {
                    Poll::Ready(outcome) => {
                        let reason = crate::supervise::why_ended(outcome);
                        tracing::error!(%reason, "the TLS accept loop stopped; no connection is accepted any more");
                    }
                    Poll::Pending => {
                        tracing::error!(
                            "the TLS accept loop stopped; no connection is accepted any more"
                        );
                    }
                }
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Handshaken {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Accepts connections and handshakes each in its own task, at most
/// `handshakes`' permits at once, until the server stops taking them.
async fn accept(
    listener: TcpListener,
    tls: Tls,
    accepted: mpsc::Sender<ServerIo>,
    handshakes: Arc<Semaphore>,
) {
    loop {
        // A permit first: at the limit, nothing is accepted until a
        // handshake ends.
        let permit = tokio::select! {
            () = accepted.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.server_config());
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(stream)) => {
                    let _ = accepted.send(ServerIo::Tls(Box::new(stream))).await;
                }
                Ok(Err(error)) => refused(peer, "refused", &error),
                Err(_) => refused(peer, "timeout", &"no handshake within the timeout"),
            }
        });
    }
}

/// Counts a failed handshake and logs it at debug level: a scanner or a
/// misconfigured client can cause many, and the counter is what to alert on.
fn refused(peer: SocketAddr, reason: &'static str, detail: &dyn std::fmt::Display) {
    metrics::counter!("votemesh_tls_handshake_failures_total", "reason" => reason).increment(1);
    tracing::debug!(%peer, %detail, "TLS handshake failed: connection refused");
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
