//! The worker's heartbeat, as an operator sees it in the logs: one
//! warning when it starts failing (its batch will be reclaimed if it keeps
//! failing) and one when it recovers, against a real redis-server stopped
//! and restarted twice.
//!
//! Alone in its test binary: tracing caches which events a callsite
//! emits across threads, so a test running in parallel can hide events
//! from the capture.

use std::{sync::Arc, time::Duration};

use votemesh::{queue::redis::RedisQueue, shutdown::CancellationToken};
use votemesh_testing::{RedisServer, probe};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn heartbeat_failures_are_a_warning_per_outage_and_so_is_the_recovery() {
    use tracing::Level;
    // A current-thread test: the heartbeat task logs to this capture.
    let (logs, _guard) = votemesh_testing::logs::capture();
    let mut redis = RedisServer::start().await.unwrap();
    let source = Arc::new(RedisQueue::new(&redis.url()).unwrap().for_worker("hb"));
    let shutdown = CancellationToken::new();
    let heartbeat = tokio::spawn(votemesh_worker::drain::heartbeat(
        source,
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    for outage in 1..=2 {
        probe::wait_for("a heartbeat", WAIT, || async {
            redis
                .command(&["EXISTS", "votes:worker:hb"])
                .await
                .is_ok_and(|reply| reply.starts_with(":1"))
        })
        .await;
        redis.stop().await;
        // Heartbeats fail (at whatever level), again and again.
        let failed = || {
            logs.events()
                .iter()
                .filter(|event| event.message.starts_with("heartbeat failed"))
                .count()
        };
        probe::wait_for("a failed heartbeat", WAIT, || async { failed() >= outage }).await;
        let still = || logs.count(Level::DEBUG, "heartbeat still failing");
        let before = still();
        probe::wait_for("another failed heartbeat", WAIT, || async {
            still() > before
        })
        .await;
        redis.restart().await.unwrap();
        probe::wait_for("the recovery logged", WAIT, || async {
            logs.count(Level::WARN, "heartbeat works again") == outage
        })
        .await;
    }
    shutdown.cancel();
    heartbeat.await.unwrap();
    let warnings: Vec<String> = logs
        .own(Level::WARN)
        .into_iter()
        .map(|event| event.message)
        .filter(|message| !message.contains("readiness"))
        .collect();
    assert_eq!(
        logs.count(Level::WARN, "heartbeat failed"),
        2,
        "{warnings:?}"
    );
    assert_eq!(
        warnings.len(),
        4,
        "one warning when it fails, one when it recovers, per outage: {warnings:?}"
    );
}
