//! The components' default addresses: where the vote, result and worker
//! servers listen, and where clients (the gateway, the load generator)
//! find the vote and result services. The gateway's own listen address is
//! the gateway crate's; the all-in-one local run's are its own (loopback,
//! on host ports a stock machine leaves free).
//!
//! A server listens on `[::]` by default: every address, IPv6 and IPv4 on
//! one dual-stack socket ([`crate::component::listen`]), which falls back
//! to `0.0.0.0` on a host without IPv6. The ports are the ports inside
//! containers.

/// Default listen address of the vote service.
pub const DEFAULT_VOTE_LISTEN: &str = "[::]:5000";
/// Default listen address of the result service.
pub const DEFAULT_RESULT_LISTEN: &str = "[::]:5001";
/// Default listen address of the worker's health and stats server.
pub const DEFAULT_WORKER_LISTEN: &str = "[::]:8080";
/// Where clients (the gateway, the load generator) find the vote service
/// by default: a vote service on this machine, on its own default port.
pub const DEFAULT_VOTE_ADDR: &str = "http://127.0.0.1:5000";
/// Where clients find the result service by default: a result service on
/// this machine, on its own default port.
pub const DEFAULT_RESULT_ADDR: &str = "http://127.0.0.1:5001";

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn servers_listen_on_every_address_at_their_container_ports() {
        for (listen, port) in [
            (DEFAULT_VOTE_LISTEN, 5000),
            (DEFAULT_RESULT_LISTEN, 5001),
            (DEFAULT_WORKER_LISTEN, 8080),
        ] {
            let addr: SocketAddr = listen.parse().unwrap();
            assert!(addr.is_ipv6() && addr.ip().is_unspecified(), "{listen}");
            assert_eq!(addr.port(), port, "{listen}");
        }
    }
}
