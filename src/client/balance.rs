//! Client-side load balancing, without a sidecar: every call goes to one of
//! the addresses a name resolves to, chosen by power of two choices on
//! the number of calls in flight (tower's p2c balancer).
//!
//! ```text
//! call ─► Buffer ─► p2c Balance ─► FailFast ─► tonic Channel (one per address)
//!                       ▲
//!        resolver task: looks the name up every RESOLVE_INTERVAL and
//!        inserts / removes addresses (a Kubernetes headless Service name
//!        resolves to every ready pod); owned by the balancer, restarted
//!        if it panics
//! ```
//!
//! Behind a ClusterIP Service the name resolves to one virtual address and
//! this is one connection, as before; behind a headless Service every call
//! is spread over the ready pods, and a pod that leaves (rolling restart)
//! leaves the balancer. An address whose connection just failed is taken
//! out of the choice for [`FAILED_ENDPOINT_PAUSE`] ([`FailFast`]), so the
//! retry of a failed call goes to another replica instead of the same
//! dead one.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    body::Body,
    codegen::http,
    transport::{Channel, Endpoint},
};
use tower::{
    BoxError, Service,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxCloneSyncService,
};

use super::{CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use crate::supervise;

/// How often a name is looked up again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a name that resolved to nothing is looked up again.
pub const RESOLVE_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long an address whose connection failed is left out of the choice.
pub const FAILED_ENDPOINT_PAUSE: Duration = Duration::from_millis(500);
/// Calls waiting for a ready address, per channel.
const BUFFER_CAPACITY: usize = 1024;

/// A balanced channel: cheap to clone, shared by every clone.
pub type BalancedChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Where the addresses of an upstream come from.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses now. An error keeps the ones known.
    fn resolve(&self) -> impl Future<Output = std::io::Result<HashSet<SocketAddr>>> + Send;

    /// What to call the upstream in logs.
    fn name(&self) -> String;
}

/// Addresses from DNS: `host:port` looked up with the system resolver.
#[derive(Clone, Debug)]
pub struct Dns {
    /// The name, such as `vote` (a Service) or `127.0.0.1`.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Resolve for Dns {
    async fn resolve(&self) -> std::io::Result<HashSet<SocketAddr>> {
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect())
    }

    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A channel balancing over the addresses `resolver` gives, looked up
/// again every `interval` by a task that ends with the last clone. Must be
/// called inside a tokio runtime.
///
/// The resolver task belongs to the balancer: the guard that ends it lives
/// in the balancer's stream of address changes, so it ends when the last
/// clone of the channel is gone. A panic in it is logged and it starts
/// again ([`crate::supervise::restarting`]) from the addresses last sent:
/// meanwhile the balancer keeps calling the addresses it has.
pub fn channel(
    connector: super::Connector,
    resolver: impl Resolve,
    interval: Duration,
) -> BalancedChannel {
    let (changes, discovered) = mpsc::channel(64);
    let resolver = Arc::new(resolver);
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let resolving = supervise::restarting("resolver", move || {
        follow(
            connector.clone(),
            resolver.clone(),
            interval,
            changes.clone(),
            sent.clone(),
        )
    });
    let discover = ReceiverStream::new(discovered).map(move |change| {
        // Owned by the stream, so dropped (ending the task) with the balancer.
        let _owner = &resolving;
        Ok::<_, BoxError>(change)
    });
    let balance = Balance::new(discover);
    let buffered = Buffer::new(balance, BUFFER_CAPACITY);
    BoxCloneSyncService::new(buffered)
}

/// One address in the balancer: its channel, its failure pause, its load.
type Backend = PendingRequests<FailFast<Channel>, CompleteOnResponse>;

/// Resolves now and every `interval`, and tells the balancer which
/// addresses came and went, until the balancer is gone. `sent_all` holds
/// the addresses the balancer was last told of, kept across a restart.
async fn follow(
    connector: super::Connector,
    resolver: Arc<impl Resolve>,
    interval: Duration,
    changes: mpsc::Sender<Change<SocketAddr, Backend>>,
    sent_all: Arc<Mutex<HashSet<SocketAddr>>>,
) {
    let upstream = resolver.name();
    let mut current: HashSet<SocketAddr> = sent_all
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut failing = false;
    loop {
        match resolver.resolve().await {
            Ok(found) => {
                if failing {
                    tracing::info!(%upstream, addresses = found.len(), "resolves again");
                    failing = false;
                }
                let mut sent = Vec::new();
                for gone in current.difference(&found) {
                    sent.push(Change::Remove(*gone));
                }
                for new in found.difference(&current) {
                    sent.push(Change::Insert(*new, endpoint(&connector, *new)));
                }
                if !sent.is_empty() {
                    let addresses: Vec<String> = found.iter().map(ToString::to_string).collect();
                    tracing::info!(%upstream, addresses = %addresses.join(" "), "upstream addresses");
                }
                for change in sent {
                    if changes.send(change).await.is_err() {
                        return;
                    }
                }
                sent_all
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone_from(&found);
                current = found;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%upstream, %error, "cannot resolve; keeping the addresses known");
                    failing = true;
                }
            }
        }
        let pause = if current.is_empty() {
            RESOLVE_RETRY_INTERVAL.min(interval)
        } else {
            interval
        };
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One address's lazily connected channel, with its load and failure pause.
fn endpoint(connector: &super::Connector, addr: SocketAddr) -> Backend {
    let endpoint = Endpoint::from(super::address_uri(connector.scheme(), addr))
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = connector.lazy(endpoint);
    PendingRequests::new(FailFast::new(channel), CompleteOnResponse::default())
}

/// Takes an address out of the balancer's choice for
/// [`FAILED_ENDPOINT_PAUSE`] after a call on it failed at the transport
/// (connection refused, reset, closed): tonic's channel reconnects on the
/// next call, and without the pause the balancer would keep choosing the
/// address that fails fastest.
pub struct FailFast<S> {
    inner: S,
    /// Set by a failed call's future; read by `poll_ready`.
    failed: Arc<AtomicBool>,
    /// The pause in progress.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FailFast<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failed: Arc::new(AtomicBool::new(false)),
            pause: None,
        }
    }
}

impl<S, Request> Service<Request> for FailFast<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.failed.swap(false, Ordering::SeqCst) {
            self.pause = Some(Box::pin(tokio::time::sleep(FAILED_ENDPOINT_PAUSE)));
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let failed = self.failed.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            if result.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            result
        })
    }
}
