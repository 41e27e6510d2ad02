//! The command line of `votemesh-worker`. Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use clap::Parser;
use votemesh::{
    component::ServerArgs,
    config::{self, DatabaseArgs, DatabaseHostsArgs, QueueArgs, RedisArgs, TlsServerArgs},
};

/// Drains the Redis vote queue into Postgres.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address to serve gRPC health and stats on.
    #[arg(long, env = "WORKER_LISTEN_ADDR", default_value = config::DEFAULT_WORKER_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// This worker's id (names its processing list); unique among running
    /// workers. Default: host name and process id.
    #[arg(long, env = "WORKER_ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub worker_id: Option<String>,
    /// Most votes written per transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = crate::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Milliseconds to wait after a batch that emptied the queue before
    /// taking the next (0: take at once), so a steady trickle is written
    /// in fewer, larger batches.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = crate::DEFAULT_BATCH_LINGER.as_millis() as u64)]
    pub batch_linger_ms: u64,
    /// Where the Redis queue is.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// How the queue is spread: a Redis Cluster, shards, replica
    /// acknowledgements.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Several databases that share the votes.
    #[command(flatten)]
    pub database_hosts: DatabaseHostsArgs,
    /// Mutual TLS (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE; unset:
    /// plaintext), who may call, and the plaintext health listener.
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// `--health-check`, logs and traces.
    #[command(flatten)]
    pub server: ServerArgs,
}
