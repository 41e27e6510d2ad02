//! Shared by the standalone crate's tests: the whole system (gateway,
//! vote, worker, result) in this process on free loopback ports.

#![allow(dead_code)] // each test file uses its own part of this module

use std::{path::Path, time::Duration};

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::{ConnectionUrl, PollArgs},
    poll::Poll,
    proto::v1::{
        result_service_client::ResultServiceClient, vote_service_client::VoteServiceClient,
    },
    shutdown::CancellationToken,
};
use votemesh_standalone::{Addrs, Backends, Listeners, Settings};
use votemesh_testing::probe;

pub const WAIT: Duration = Duration::from_secs(30);

/// A SQLite database in `dir`.
pub fn sqlite_in(dir: &Path) -> ConnectionUrl {
    ConnectionUrl::new(format!(
        "sqlite://{}?mode=rwc",
        dir.join("votes.sqlite").display()
    ))
}

/// The default poll (Cats, Dogs).
pub fn cats_and_dogs() -> Poll {
    PollArgs::default().poll().unwrap()
}

/// One running system.
pub struct System {
    pub addrs: Addrs,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl System {
    /// Starts the system on `backends` and waits until the gRPC services
    /// are ready.
    pub async fn start(backends: Backends, poll: Poll) -> Self {
        Self::start_on(Listeners::loopback().await.unwrap(), backends, poll).await
    }

    /// Starts the system on `listeners` and `backends` and waits until the
    /// gRPC services are ready (asked on loopback).
    pub async fn start_on(listeners: Listeners, backends: Backends, poll: Poll) -> Self {
        let addrs = listeners.addrs().unwrap();
        let shutdown = CancellationToken::new();
        let settings = Settings {
            poll,
            instance: "test".into(),
            refresh_interval: Duration::from_millis(50),
        };
        let task = tokio::spawn(votemesh_standalone::run(
            listeners,
            backends,
            settings,
            shutdown.clone(),
        ));
        let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
        for addr in [addrs.vote, addrs.worker, addrs.result] {
            let addr = votemesh::client::selfcheck::loopback(addr);
            probe::wait_for("all services ready", WAIT, || async {
                probe::health(addr, "").await == Ok(ServingStatus::Serving)
            })
            .await;
        }
        Self {
            addrs,
            shutdown,
            task,
        }
    }

    /// Starts the system with no server at all: in-process queue, SQLite in `dir`.
    pub async fn embedded(dir: &Path, poll: Poll) -> Self {
        let backends = Backends {
            redis: None,
            database: sqlite_in(dir),
        };
        Self::start(backends, poll).await
    }

    pub async fn vote_client(&self) -> VoteServiceClient<Channel> {
        VoteServiceClient::new(votemesh::client::connect(self.addrs.vote).await.unwrap())
    }

    pub async fn result_client(&self) -> ResultServiceClient<Channel> {
        ResultServiceClient::new(votemesh::client::connect(self.addrs.result).await.unwrap())
    }

    /// Shuts the system down and waits until every server stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}
