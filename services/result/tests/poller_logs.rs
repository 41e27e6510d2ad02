//! The result service's tally poller, as an operator sees it in the logs:
//! one warning when reading the tally starts failing and one when it
//! recovers, against a real PostgreSQL stopped and restarted twice.
//!
//! Alone in its test binary: tracing caches which events a callsite
//! emits across threads, so a test running in parallel can hide events
//! from the capture.

use std::time::Duration;

use votemesh_testing::{PostgresServer, probe};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn tally_read_failures_are_a_warning_per_outage_and_so_is_the_recovery() {
    use tracing::Level;
    // A current-thread test: the poller task logs to this capture.
    let (logs, _guard) = votemesh_testing::logs::capture();
    let mut postgres = PostgresServer::start().await.unwrap();
    let db = votemesh::store::connect(&postgres.url()).await.unwrap();
    votemesh::store::migrate(&db).await.unwrap();
    let (health, _health_service) = votemesh::health::Health::new(&["test"]).await;
    let shutdown = votemesh::shutdown::CancellationToken::new();
    let (_feed, poller) = votemesh_result::feed::spawn(
        db.into(),
        votemesh_testing_services::cats_and_dogs(),
        Duration::from_millis(50),
        health.clone(),
        shutdown.clone(),
    );
    for outage in 1..=2 {
        probe::wait_for("the tally reads", WAIT, || async { health.is_ready() }).await;
        postgres.stop().await;
        // Reads fail (readiness says so), again and again.
        probe::wait_for("a failed read", WAIT, || async { !health.is_ready() }).await;
        let still = || logs.count(Level::DEBUG, "still cannot read the tally");
        let before = still();
        probe::wait_for("another failed read", WAIT, || async { still() > before }).await;
        postgres.restart().await.unwrap();
        let recovered = tokio::time::timeout(WAIT, async {
            while logs.count(Level::WARN, "the tally reads again") != outage {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            recovered.is_ok(),
            "outage {outage}: no recovery logged; ready: {}; events: {:#?}",
            health.is_ready(),
            logs.events()
                .into_iter()
                .filter(|event| event.target.starts_with("votemesh"))
                .map(|event| format!("{} {}", event.level, event.message))
                .collect::<Vec<_>>()
        );
    }
    shutdown.cancel();
    poller.await.unwrap();
    let warnings: Vec<String> = logs
        .own(Level::WARN)
        .into_iter()
        .map(|event| event.message)
        .filter(|message| !message.contains("readiness"))
        .collect();
    assert_eq!(
        logs.count(Level::WARN, "cannot read the tally"),
        2,
        "{warnings:?}"
    );
    assert_eq!(
        warnings.len(),
        4,
        "one warning when it fails, one when it recovers, per outage: {warnings:?}"
    );
}
