//! `grpc.health.v1` wiring shared by every gRPC server.
//!
//! Server side only (a client asks with [`crate::client::check_health`]).
//! Each server reports three kinds of names (the health model of
//! `docs/DESIGN.md`):
//! - [`LIVENESS`]: SERVING while the process can serve at all (the
//!   Kubernetes liveness probe asks for it);
//! - `""` and the business service name (such as `votemesh.v1.VoteService`):
//!   SERVING only while the component's dependencies answer (readiness).
//!
//! [`Health`] flips the readiness names together; [`spawn_readiness_probe`]
//! keeps them in step with a dependency check; [`Health::shut_down`] turns
//! them NOT_SERVING for good when the process is draining (and ends open
//! Watch streams, which would otherwise keep the server from stopping).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health as HealthApi, HealthServer},
    server::HealthReporter,
};

/// The health service name that reports liveness.
pub const LIVENESS: &str = "liveness";

/// How often [`spawn_readiness_probe`] checks the dependencies by default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long one dependency check may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Handle to one server's health statuses; cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    /// Serialises changes of status, so that a readiness update racing with
    /// [`Health::shut_down`] cannot publish SERVING after it.
    reporter: Arc<Mutex<HealthReporter>>,
    /// `""` and the business service names: the readiness names.
    readiness_names: Arc<[String]>,
    /// Last readiness reported, to log only changes.
    ready: Arc<AtomicBool>,
    /// Set once shutdown began: readiness stays NOT_SERVING from then on.
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Creates the health service for a server whose business services are
    /// `service_names`. Liveness starts SERVING; readiness starts NOT_SERVING
    /// until [`Health::set_ready`] (or the probe) says otherwise.
    pub async fn new(service_names: &[&str]) -> (Self, HealthServer<impl HealthApi + use<>>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let mut names: Vec<String> = vec![String::new()];
        names.extend(service_names.iter().map(|name| (*name).to_owned()));
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let health = Self {
            reporter: Arc::new(Mutex::new(reporter)),
            readiness_names: names.into(),
            ready: Arc::new(AtomicBool::new(false)),
            shutting_down: Arc::new(AtomicBool::new(false)),
        };
        health.publish(&*health.reporter.lock().await, false).await;
        (health, server)
    }

    /// Reports readiness: SERVING if `ready`, else NOT_SERVING. Ignored
    /// once shutdown began. Logs each change.
    pub async fn set_ready(&self, ready: bool) {
        let reporter = self.reporter.lock().await;
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let was_ready = self.ready.swap(ready, Ordering::SeqCst);
        if was_ready != ready {
            if ready {
                tracing::info!("dependencies answer: readiness SERVING");
            } else {
                tracing::warn!("a dependency does not answer: readiness NOT_SERVING");
            }
        }
        self.publish(&reporter, ready).await;
    }

    /// Whether readiness is currently SERVING.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// Draining: readiness goes NOT_SERVING and stays so; liveness stays
    /// SERVING while the server still answers. Open Watch streams get the
    /// NOT_SERVING update and then end, so they do not hold the drain open.
    pub async fn shut_down(&self) {
        let mut reporter = self.reporter.lock().await;
        self.shutting_down.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
        self.publish(&reporter, false).await;
        // Dropping a name's channel ends its Watch streams; setting it again
        // keeps Check answering with the same status.
        for name in self.readiness_names.iter() {
            reporter.clear_service_status(name).await;
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        reporter.clear_service_status(LIVENESS).await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
    }

    async fn publish(&self, reporter: &HealthReporter, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in self.readiness_names.iter() {
            reporter.set_service_status(name, status).await;
        }
    }
}

/// Runs `check` every `interval` and reports its answer as readiness, until
/// `shutdown` is cancelled. The first check runs at once; a check that
/// takes longer than [`PROBE_TIMEOUT`] counts as failed.
pub fn spawn_readiness_probe<F, Fut>(
    health: Health,
    interval: Duration,
    shutdown: CancellationToken,
    check: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    let ready = tokio::time::timeout(PROBE_TIMEOUT, check())
                        .await
                        .unwrap_or(false);
                    health.set_ready(ready).await;
                }
            }
        }
    })
}
