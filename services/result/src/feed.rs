//! The tally feed: one poller per process reads the tally every interval
//! and publishes it on a `watch` channel when the counts change. Every
//! WatchResults stream subscribes to the channel, so a thousand watchers
//! cost one query per interval, and a slow watcher only ever skips to the
//! newest tally.
//!
//! The poller is also the readiness probe: SERVING while the tally reads.
//! It logs at warn when reading starts failing and when it recovers.
//!
//! For `/metrics`: `votemesh_result_tally_read_timestamp_seconds` (when
//! the served tally was read: its freshness is `time()` minus it),
//! `votemesh_result_tally_read_failures_total`, and the database pool.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::{sync::watch, task::JoinHandle};
use votemesh::{health::Health, poll::Poll, shutdown::CancellationToken};

use crate::tally::{self, Tally};

/// The latest tally; `None` until the first successful read.
pub type TallyFeed = watch::Receiver<Option<Tally>>;

/// Starts the poller; returns the feed and the poller's task.
pub fn spawn(
    db: DatabaseConnection,
    poll: Poll,
    interval: Duration,
    health: Health,
    shutdown: CancellationToken,
) -> (TallyFeed, JoinHandle<()>) {
    let (sender, feed) = watch::channel::<Option<Tally>>(None);
    metrics::counter!("votemesh_result_tally_read_failures_total").increment(0);
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set while reads fail: each change of state is logged once, at
        // warn (the first failure, then the recovery), not every interval.
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let read = tally::read(&db, &poll).await;
            votemesh::store::record_pool_metrics(&db);
            match read {
                Ok(latest) => {
                    metrics::gauge!("votemesh_result_tally_read_timestamp_seconds")
                        .set(latest.as_of.timestamp_micros() as f64 / 1e6);
                    if let Some(since) = failing_since.take() {
                        tracing::warn!(failed_for = ?since.elapsed(), "the tally reads again");
                    }
                    health.set_ready(true).await;
                    sender.send_if_modified(|current| {
                        let changed = current
                            .as_ref()
                            .is_none_or(|current: &Tally| current.counts_differ(&latest));
                        if changed {
                            *current = Some(latest);
                        }
                        changed
                    });
                }
                Err(error) => {
                    metrics::counter!("votemesh_result_tally_read_failures_total").increment(1);
                    if failing_since.is_none() {
                        failing_since = Some(tokio::time::Instant::now());
                        tracing::warn!(%error, "cannot read the tally; retrying every interval");
                    } else {
                        tracing::debug!(%error, "still cannot read the tally");
                    }
                    health.set_ready(false).await;
                }
            }
        }
    });
    (feed, task)
}
