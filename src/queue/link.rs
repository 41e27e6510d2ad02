//! The pusher's link to Redis: one node or a Redis Cluster, behind one
//! connection type, and the check of the queue's layout that every new
//! link makes before it carries a vote.
//!
//! ```text
//! Target::Single  ─► MultiplexedConnection (RESP3: a disconnection is reported as it happens)
//! Target::Cluster ─► ClusterConnection (one multiplexed connection per node; follows
//!                    MOVED/ASK, refreshes the slot map, reconnects by itself)
//!        └─► check_layout: votes:layout holds QUEUE_SHARDS, set by the first component
//!            to use the queue; another count is refused (QueueError::Failed), so no two
//!            components ever put one voter's votes in different shards
//! ```
//!
//! Both connections implement the client library's `ConnectionLike`, so
//! scripts and pipelines run on a [`PushConnection`] whichever it is. On a
//! cluster a script or pipeline goes to the primary of its first key's
//! slot; every key of one call belongs to one shard ([`super::shard`]),
//! hence to one slot.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bb8_redis::redis::{
    self, Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::{QUEUE_KEY, QueueError, connect, shard::Shards};
use crate::{config::ConnectionUrl, tls::Tls};

/// Where a link goes.
#[derive(Clone)]
pub enum Target {
    /// One Redis (`REDIS_URL`); a `rediss://` URL verified with `tls`.
    Single {
        /// Its URL.
        url: ConnectionUrl,
        /// The identity a `rediss://` connection uses (see [`connect`]).
        tls: Option<Tls>,
    },
    /// A Redis Cluster (`REDIS_CLUSTER_NODES`).
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single { url, .. } => f.debug_tuple("Single").field(url).finish(),
            Self::Cluster(_) => f.write_str("Cluster"),
        }
    }
}

impl Target {
    /// Checks that a link can be built (a URL that cannot make a client is
    /// refused here, not at the first vote).
    pub fn check(&self) -> Result<(), QueueError> {
        match self {
            Self::Single { url, tls } => connect::client(url, tls.as_ref(), ProtocolVersion::RESP3)
                .map(drop)
                .map_err(|error| {
                    QueueError::Failed(format!("cannot build a Redis client for {url}: {error}"))
                }),
            Self::Cluster(_) => Ok(()),
        }
    }
}

/// The client of a Redis Cluster reached through `seeds` (`host:port`).
pub fn cluster_client(seeds: &[String]) -> Result<ClusterClient, QueueError> {
    ClusterClient::builder(seeds.iter().map(|seed| format!("redis://{seed}/")))
        .connection_timeout(connect::CONNECTION_TIMEOUT)
        .response_timeout(connect::RESPONSE_TIMEOUT)
        .build()
        .map_err(|error| {
            QueueError::Failed(format!(
                "cannot build a Redis Cluster client for {}: {error}",
                seeds.join(",")
            ))
        })
}

/// An open link, and whether it is still usable.
pub struct Link {
    connection: PushConnection,
    /// Set when the single node's client reported the connection closed.
    /// A cluster connection reconnects by itself and is never replaced.
    closed: Option<Arc<AtomicBool>>,
}

impl Link {
    /// Opens a link to `target` and checks that the queue there was set up
    /// with `shards` shards ([`check_layout`]).
    pub async fn open(target: &Target, shards: Shards) -> Result<Self, QueueError> {
        let mut link = match target {
            Target::Single { url, tls } => {
                let client = connect::client(url, tls.as_ref(), ProtocolVersion::RESP3)
                    .map_err(|error| QueueError::Unavailable(error.to_string()))?;
                let closed = Arc::new(AtomicBool::new(false));
                let on_push = {
                    let closed = closed.clone();
                    move |info: PushInfo| {
                        if info.kind == redis::PushKind::Disconnection {
                            closed.store(true, Ordering::Relaxed);
                        }
                        Ok::<(), std::convert::Infallible>(())
                    }
                };
                let config = connect::connection_config().set_push_sender(on_push);
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|error| QueueError::Unavailable(error.to_string()))?;
                Self {
                    connection: PushConnection::Single(connection),
                    closed: Some(closed),
                }
            }
            Target::Cluster(client) => {
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(|error| QueueError::Unavailable(error.to_string()))?;
                Self {
                    connection: PushConnection::Cluster(connection),
                    closed: None,
                }
            }
        };
        check_layout(&mut link.connection, shards).await?;
        Ok(link)
    }

    /// Whether the link still works (a single node's connection that the
    /// client saw close does not).
    pub fn is_open(&self) -> bool {
        self.closed
            .as_ref()
            .is_none_or(|closed| !closed.load(Ordering::Relaxed))
    }

    /// A handle to send commands on (cheap: both connections multiplex).
    pub fn connection(&self) -> PushConnection {
        self.connection.clone()
    }
}

/// The readiness check of a queue on Redis: a PING (on a cluster, of every
/// primary), then [`check_layout`], so a component started with another
/// `QUEUE_SHARDS` than the queue was set up with is not ready, and says why.
pub async fn ping(connection: &mut impl ConnectionLike, shards: Shards) -> Result<(), QueueError> {
    let _: String = redis::cmd("PING")
        .query_async(connection)
        .await
        .map_err(connect::classify)?;
    check_layout(connection, shards).await
}

/// Checks that the queue was set up with `shards` shards, recording it if
/// nobody has yet (`votes:layout`). Refused ([`QueueError::Failed`]):
///
/// - another count: the voters would land in other shards than the
///   queued votes of the same voters, and be drained out of order;
/// - a first sharded use while the unsharded queue (`votes`) still holds
///   votes: they would wait there for a worker that no longer looks.
///
/// Changing the count is done with the queue empty: stop the vote
/// services, let the workers drain it, stop them, `DEL votes:layout`, and
/// start everything with the new `QUEUE_SHARDS` (docs/SCALING.md).
pub async fn check_layout(
    connection: &mut impl ConnectionLike,
    shards: Shards,
) -> Result<(), QueueError> {
    let count = shards.count();
    let recorded: Option<String> = redis::cmd("GET")
        .arg(Shards::layout_key())
        .query_async(connection)
        .await
        .map_err(connect::classify)?;
    let recorded = match recorded {
        Some(recorded) => recorded,
        None => {
            if count > 1 {
                let unsharded: u64 = redis::cmd("LLEN")
                    .arg(QUEUE_KEY)
                    .query_async(connection)
                    .await
                    .map_err(connect::classify)?;
                if unsharded > 0 {
                    return Err(QueueError::Failed(format!(
                        "QUEUE_SHARDS={count}, but the unsharded queue ({QUEUE_KEY}) still holds \
                         {unsharded} votes: let the workers drain it with the old setting first"
                    )));
                }
            }
            let previous: Option<String> = redis::cmd("SET")
                .arg(Shards::layout_key())
                .arg(count)
                .arg("NX")
                .arg("GET")
                .query_async(connection)
                .await
                .map_err(connect::classify)?;
            match previous {
                // Someone else recorded it meanwhile: compare with theirs.
                Some(previous) => previous,
                None => return Ok(()),
            }
        }
    };
    if recorded.trim() == count.to_string() {
        return Ok(());
    }
    Err(QueueError::Failed(format!(
        "the vote queue was set up with {recorded} shards ({key}), not QUEUE_SHARDS={count}: \
         refusing to use it, so no voter's votes end up in two shards. To change the count, \
         drain the queue, stop every component, DEL {key}, and start them all with the new \
         QUEUE_SHARDS",
        key = Shards::layout_key()
    )))
}

/// A connection to one node or to a cluster: what the pusher sends on.
#[derive(Clone)]
pub enum PushConnection {
    /// One Redis.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for PushConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}
