//! Where servers listen. `[::]`, the component binaries' default, is one
//! dual-stack socket: a server on it answers on the IPv6 and the IPv4
//! loopback alike (so IPv6-only clusters' probes reach it too). The
//! all-in-one run's own defaults are loopback, on the documented host
//! ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh_standalone::{Listeners, cli::Cli};
use votemesh_testing::probe;

mod support;

use support::{System, cats_and_dogs, sqlite_in};

/// Whether this host has an IPv6 loopback at all (some CI containers do
/// not); without one only IPv4 can be checked.
fn has_ipv6() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// The status line of `GET /healthz` from the gateway at `addr`.
async fn healthz(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: votemesh\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_every_address_answer_on_ipv6_and_ipv4_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listeners = Listeners::bind(any, any, loopback, loopback).await.unwrap();
    let backends = votemesh_standalone::Backends {
        redis: None,
        database: sqlite_in(dir.path()),
    };
    let system = System::start_on(listeners, backends, cats_and_dogs()).await;

    let mut loopbacks = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if has_ipv6() {
        loopbacks.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    } else {
        eprintln!("this host has no IPv6 loopback: only IPv4 is checked");
    }
    for ip in loopbacks {
        let vote = SocketAddr::new(ip, system.addrs.vote.port());
        assert_eq!(
            probe::health(vote, "").await,
            Ok(ServingStatus::Serving),
            "the vote service on {vote}"
        );
        let gateway = SocketAddr::new(ip, system.addrs.gateway.port());
        let status = healthz(gateway).await;
        assert!(
            status.contains(" 200 "),
            "the gateway on {gateway}: {status}"
        );
    }
    system.stop().await;
}

#[test]
fn the_local_run_listens_on_loopback_by_default() {
    let cli = Cli::try_parse_from(["votemesh"]).unwrap();
    for addr in [
        cli.gateway_listen,
        cli.vote_listen,
        cli.result_listen,
        cli.worker_listen,
    ] {
        assert!(addr.ip().is_loopback(), "{addr}");
    }
}
