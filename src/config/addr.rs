//! The components' default addresses: where the vote, result and worker
//! servers listen, and where clients (the gateway, the load generator)
//! find the vote and result services. The gateway's own listen address is
//! the gateway crate's.

/// Default listen address of the vote service.
pub const DEFAULT_VOTE_LISTEN: &str = "0.0.0.0:5000";
/// Default listen address of the result service.
pub const DEFAULT_RESULT_LISTEN: &str = "0.0.0.0:5001";
/// Default listen address of the worker's health and stats server.
pub const DEFAULT_WORKER_LISTEN: &str = "0.0.0.0:8080";
/// Where clients (the gateway, the load generator) find the vote service
/// by default: the local run's.
pub const DEFAULT_VOTE_ADDR: &str = "http://127.0.0.1:5000";
/// Where clients find the result service by default: the local run's.
pub const DEFAULT_RESULT_ADDR: &str = "http://127.0.0.1:5001";
