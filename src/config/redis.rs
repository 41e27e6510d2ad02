//! Where Redis is ([`RedisArgs`]): `REDIS_URL`, or `REDIS_HOST` and
//! `REDIS_PORT`, turned into the one URL the queue connects to; and how
//! the queue is spread ([`QueueArgs`], the vote service's and the
//! worker's): with `REDIS_CLUSTER_NODES`, on a Redis Cluster;
//! `QUEUE_SHARDS` and `REDIS_REPLICA_ACKS` ([`QueueLayout`]) say how many
//! shards it has and how many replicas confirm each push.

use std::num::NonZeroU16;

use clap::Args;

use super::{
    ConnectionUrl, ConnectionUrlParser,
    parse::{parse_host_port, port_parser},
    parse_host,
};
use crate::queue::shard::Shards;

/// Queue shards on a Redis Cluster when `QUEUE_SHARDS` is unset: up to 16
/// workers drain in parallel. Not more by default, because a vote service
/// sends one push call per shard its votes fall in, and a call costs Redis
/// about what six votes do: at 64 concurrent votes per vote service on 3
/// primaries, Redis spent 6.1-6.8 µs a vote with 3 shards, 15.1 with 16
/// and 31-39 with 64 (docs/SCALING.md, "What a push costs on a cluster").
pub const DEFAULT_CLUSTER_SHARDS: u16 = 16;
/// Replicas that confirm a push on a Redis Cluster when
/// `REDIS_REPLICA_ACKS` is unset.
pub const DEFAULT_CLUSTER_REPLICA_ACKS: u8 = 1;

/// Default Redis port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Where Redis is: `REDIS_URL`, or `REDIS_HOST` and `REDIS_PORT`.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL such as redis://:password@redis:6379/0; overrides host and port.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true, value_parser = ConnectionUrlParser::REDIS)]
    pub redis_url: Option<ConnectionUrl>,
    /// Redis host name.
    #[arg(long = "redis-host", env = "REDIS_HOST", value_parser = parse_host)]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(long = "redis-port", env = "REDIS_PORT", default_value_t = DEFAULT_REDIS_PORT, value_parser = port_parser())]
    pub redis_port: u16,
}

/// How the queue is spread (the vote service and the worker; the all-in-one
/// run always has one Redis and an unsharded queue): on a Redis Cluster
/// (`REDIS_CLUSTER_NODES`), in `QUEUE_SHARDS` shards, each push confirmed
/// by `REDIS_REPLICA_ACKS` replicas (docs/SCALING.md).
#[derive(Args, Clone, Debug, Default)]
pub struct QueueArgs {
    /// Seed nodes of a Redis (or Valkey) Cluster, host:port,host:port,...;
    /// the queue then lives on the cluster, and REDIS_URL/HOST/PORT are
    /// not used.
    #[arg(long = "redis-cluster-nodes", env = "REDIS_CLUSTER_NODES", value_delimiter = ',', value_parser = parse_host_port)]
    pub redis_cluster_nodes: Vec<String>,
    /// The queue's number of shards, fixed for its life (default: 1 on a
    /// single Redis, 16 on a cluster). A component started with another
    /// count than the queue was set up with refuses to use it.
    #[arg(long = "queue-shards", env = "QUEUE_SHARDS")]
    pub queue_shards: Option<NonZeroU16>,
    /// Replicas that must confirm a push before CastVote answers OK
    /// (default: 1 on a cluster, 0 on a single Redis).
    #[arg(long = "redis-replica-acks", env = "REDIS_REPLICA_ACKS")]
    pub redis_replica_acks: Option<u8>,
}

/// How the queue sits on Redis: its shards, and how many replicas confirm
/// each push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// The queue's shards (`QUEUE_SHARDS`).
    pub shards: Shards,
    /// Replicas that confirm each push (`REDIS_REPLICA_ACKS`); 0: none.
    pub replica_acks: u8,
}

impl QueueLayout {
    /// One shard, no replica acknowledgement: a single Redis as before
    /// shards existed.
    pub const SINGLE: Self = Self {
        shards: Shards::ONE,
        replica_acks: 0,
    };
}

impl Default for RedisArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_host: None,
            redis_port: DEFAULT_REDIS_PORT,
        }
    }
}

impl RedisArgs {
    /// The Redis URL if Redis is configured at all (by URL or host).
    pub fn configured(&self) -> Option<ConnectionUrl> {
        if let Some(url) = &self.redis_url {
            return Some(url.clone());
        }
        self.redis_host
            .as_ref()
            .map(|host| ConnectionUrl::new(format!("redis://{host}:{}/", self.redis_port)))
    }

    /// The configured Redis, or the one on this machine's default port.
    pub fn url_or_local(&self) -> ConnectionUrl {
        self.configured().unwrap_or_else(|| {
            ConnectionUrl::new(format!("redis://127.0.0.1:{}/", self.redis_port))
        })
    }
}

impl QueueArgs {
    /// The seed nodes of the Redis Cluster, if one is configured.
    pub fn cluster_nodes(&self) -> Option<&[String]> {
        (!self.redis_cluster_nodes.is_empty()).then_some(self.redis_cluster_nodes.as_slice())
    }

    /// The queue's layout: the settings, or the defaults of a cluster or
    /// a single Redis.
    pub fn layout(&self) -> QueueLayout {
        let cluster = self.cluster_nodes().is_some();
        let default_shards = if cluster { DEFAULT_CLUSTER_SHARDS } else { 1 };
        QueueLayout {
            shards: Shards::new(
                self.queue_shards
                    .or(NonZeroU16::new(default_shards))
                    .unwrap_or(NonZeroU16::MIN),
            ),
            replica_acks: self.redis_replica_acks.unwrap_or(if cluster {
                DEFAULT_CLUSTER_REPLICA_ACKS
            } else {
                0
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn redis_url_from_host_and_port() {
        let args = RedisArgs {
            redis_host: Some("redis".into()),
            redis_port: 6380,
            ..RedisArgs::default()
        };
        assert_eq!(args.configured().unwrap().expose(), "redis://redis:6380/");
        assert!(RedisArgs::default().configured().is_none());
        assert_eq!(QueueArgs::default().layout(), QueueLayout::SINGLE);
        assert_eq!(
            redact_url("redis://:hunter2@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
    }

    #[test]
    fn a_cluster_defaults_to_16_shards_and_one_replica_ack() {
        let cluster = QueueArgs {
            redis_cluster_nodes: vec!["127.0.0.1:7000".into()],
            ..QueueArgs::default()
        };
        assert_eq!(cluster.layout().shards.count(), DEFAULT_CLUSTER_SHARDS);
        assert_eq!(cluster.layout().replica_acks, 1);
        let set = QueueArgs {
            queue_shards: NonZeroU16::new(8),
            redis_replica_acks: Some(0),
            ..cluster
        };
        assert_eq!(set.layout().shards.count(), 8);
        assert_eq!(set.layout().replica_acks, 0);
    }

    #[test]
    fn seed_nodes_are_host_and_port() {
        assert_eq!(parse_host_port("redis-0:6379").unwrap(), "redis-0:6379");
        assert_eq!(parse_host_port("[::1]:7000").unwrap(), "[::1]:7000");
        assert!(parse_host_port("redis-0").is_err());
        assert!(parse_host_port("redis-0:0").is_err());
        assert!(parse_host_port("redis://redis-0:6379").is_err());
    }
}
