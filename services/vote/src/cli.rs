//! The command line of `votemesh-vote`. Every flag also reads an environment
//! variable (shown by `--help`); [`votemesh::config::env_names`] lists them.

use clap::Parser;
use votemesh::{
    component::ServerArgs,
    config::{self, PollArgs, QueueArgs, RedisArgs, TlsServerArgs},
};

/// Takes votes over gRPC and queues them in Redis.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "VOTE_LISTEN_ADDR", default_value = config::DEFAULT_VOTE_LISTEN, value_parser = config::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// Where the Redis queue is.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// How the queue is spread: a Redis Cluster, shards, replica
    /// acknowledgements.
    #[command(flatten)]
    pub queue: QueueArgs,
    /// The poll's options.
    #[command(flatten)]
    pub poll: PollArgs,
    /// Mutual TLS (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE; unset:
    /// plaintext), who may call, and the plaintext health listener.
    #[command(flatten)]
    pub tls: TlsServerArgs,
    /// `--health-check`, logs and traces.
    #[command(flatten)]
    pub server: ServerArgs,
}
