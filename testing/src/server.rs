//! A server under test: any server future (a votemesh service, the
//! gateway) running in a task of the test's runtime, on a real loopback
//! listener, until its own shutdown token is cancelled. Tests stop and
//! restart servers this way to see what their clients do meanwhile.

use std::{
    fmt::Debug,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::shutdown::CancellationToken;

use crate::probe;

/// Any free loopback port: the address to [`TestServer::spawn`] a server
/// on when the test does not care which port it gets.
pub const ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// How long a test waits for a server to become ready or to stop.
pub const SERVER_WAIT: Duration = Duration::from_secs(30);

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancelling it starts the server's graceful shutdown.
    pub shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Binds `addr` (port 0: any free port; a fixed port, such as the one
    /// of a server just stopped, is retried until it is free again) and
    /// runs `run(listener, shutdown)` in a task. A server that fails
    /// fails the test when it is stopped.
    pub async fn spawn<F, Fut, E>(addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Debug + Send + 'static,
    {
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot listen on {addr}: {error}"),
            }
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no local address: {error}"));
        let shutdown = CancellationToken::new();
        let served = run(listener, shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = served.await {
                panic!("the server on {addr} failed: {error:?}");
            }
        });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// Waits until the server's readiness (`""`) is SERVING.
    pub async fn ready(self) -> Self {
        let addr = self.addr;
        probe::wait_for(&format!("{addr} ready"), SERVER_WAIT, || async {
            probe::health(addr, "").await == Ok(ServingStatus::Serving)
        })
        .await;
        self
    }

    /// Waits up to `within` for the server to return (after its shutdown
    /// was cancelled), and fails the test if it failed or took longer.
    pub async fn join(self, within: Duration) {
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
            Err(_) => panic!("the server on {} did not stop within {within:?}", self.addr),
        }
    }

    /// Shuts the server down and waits until it stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.join(SERVER_WAIT).await;
    }
}
