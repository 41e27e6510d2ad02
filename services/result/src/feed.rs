//! The tally feed: one reader per process keeps the latest tally and
//! publishes it on a `watch` channel when the counts change. Every
//! WatchResults stream subscribes to the channel and GetResults answers
//! from it, so a thousand watchers and any rate of GetResults cost one
//! query per change, and a slow watcher only ever skips to the newest
//! tally.
//!
//! ```text
//! worker commit ─► NOTIFY votemesh_tally ─► listener (1 per database) ─┐
//!                                                                      ├─► read tallies ─► watch channel
//! every interval (fallback; SQLite: the only way) ─────────────────────┘
//! ```
//!
//! On PostgreSQL a listener (`LISTEN votemesh_tally`) on each database
//! wakes the reader as soon as a worker's transaction there commits (a
//! `NOTIFY` is delivered only on commit). Notifications that arrive while a read runs collapse into
//! one more read, so a burst of commits costs at most two reads. The
//! interval keeps reading as a fallback; when the listener's connection is
//! lost it reconnects with the shared backoff and reads once it is back,
//! since notifications sent meanwhile are lost.
//!
//! The reader is also the readiness probe: SERVING while the tally reads.
//! It logs at warn when reading starts failing and when it recovers. A
//! database recorded at another place than `DB_HOSTS` gives it is not a
//! failure to wait out: the reader logs it at error and stops, and with
//! it the service (`votemesh::store::shard_map`).
//!
//! For `/metrics`: `votemesh_result_tally_read_timestamp_seconds` (when
//! the served tally was read: its freshness is `time()` minus it),
//! `votemesh_result_tally_read_failures_total`, and the database pool.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::future::join_all;
use sea_orm::{
    DatabaseConnection, DbBackend,
    sqlx::postgres::{PgListener, PgPoolOptions},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use votemesh::{
    backoff,
    health::Health,
    poll::Poll,
    shutdown::CancellationToken,
    store::{Databases, StoreError, TALLY_CHANNEL},
};

use crate::tally::{self, Tally};

/// Longest pause between attempts to reopen the listener's connection.
pub const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(5);

/// The latest tally; `None` until the first successful read. Its `as_of`
/// is the last read that found these counts.
pub type TallyFeed = watch::Receiver<Option<Tally>>;

/// Starts the reader (and, on PostgreSQL, a listener per database);
/// returns the feed and the task that runs them, which ends when the
/// reader does.
pub fn spawn(
    databases: Databases,
    poll: Poll,
    interval: Duration,
    health: Health,
    shutdown: CancellationToken,
) -> (TallyFeed, JoinHandle<()>) {
    let (sender, feed) = watch::channel::<Option<Tally>>(None);
    metrics::counter!("votemesh_result_tally_read_failures_total").increment(0);
    let wake = Arc::new(Notify::new());
    let listeners: Vec<_> = databases
        .connections()
        .filter(|db| db.get_database_backend() == DbBackend::Postgres)
        .map(|db| listen(db.clone(), wake.clone(), shutdown.clone()))
        .collect();
    let reader = read_loop(databases, poll, interval, health, sender, wake, shutdown);
    let task = tokio::spawn(async move {
        // The listeners end only at shutdown (none on SQLite): the reader's
        // end is the task's.
        let listening = async {
            join_all(listeners).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = reader => {}
            () = listening => {}
        }
    });
    (feed, task)
}

/// Reads the tally at every tick and every wake-up until `shutdown`, or
/// until a database turns out to be at another place than `databases`
/// gives it.
async fn read_loop(
    databases: Databases,
    poll: Poll,
    interval: Duration,
    health: Health,
    sender: watch::Sender<Option<Tally>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set while reads fail: each change of state is logged once, at
    // warn (the first failure, then the recovery), not every interval.
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
            () = wake.notified() => {}
        }
        let read = tally::read(&databases, &poll).await;
        databases.record_pool_metrics();
        match read {
            Ok(latest) => {
                metrics::gauge!("votemesh_result_tally_read_timestamp_seconds")
                    .set(latest.as_of.timestamp_micros() as f64 / 1e6);
                if let Some(since) = failing_since.take() {
                    tracing::warn!(failed_for = ?since.elapsed(), "the tally reads again");
                }
                health.set_ready(true).await;
                sender.send_if_modified(|current| match current {
                    Some(current) if !current.counts_differ(&latest) => {
                        // Same counts: only the time they were confirmed
                        // moves, and watchers are not woken.
                        current.as_of = latest.as_of;
                        false
                    }
                    _ => {
                        *current = Some(latest);
                        true
                    }
                });
            }
            Err(error @ StoreError::ShardMapConflict { .. }) => {
                tracing::error!(%error, "refusing to sum the tallies");
                health.set_ready(false).await;
                return;
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
}

/// Holds `LISTEN votemesh_tally` on its own connection and wakes the
/// reader on every notification; reconnects with backoff when the
/// connection is lost, and wakes the reader once it is back.
///
/// The connection is its own, outside the database pool (with the pool's
/// connect options, TLS included): a listener holds its connection for
/// good, and taking it from the pool would leave one slot fewer for reads
/// and show it busy forever.
async fn listen(db: DatabaseConnection, wake: Arc<Notify>, shutdown: CancellationToken) {
    let options = db
        .get_postgres_connection_pool()
        .connect_options()
        .as_ref()
        .clone();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut delays = backoff::delays(MAX_LISTEN_BACKOFF);
    let mut lost = false;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(TALLY_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "cannot listen for tally changes yet");
                    let delay = delays.next().unwrap_or(MAX_LISTEN_BACKOFF);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            },
        };
        delays = backoff::delays(MAX_LISTEN_BACKOFF);
        if lost {
            tracing::info!("listening for tally changes again");
        }
        // Commits may have been notified while nobody listened.
        wake.notify_one();
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) | Err(_) => break,
            }
        }
        lost = true;
        tracing::info!("lost the tally notifications; reading every interval until they are back");
    }
}

/// Whether `tally` was read recently enough to answer with: within
/// `max_age` of now (a clock stepped back counts as fresh).
pub fn is_fresh(tally: &Tally, max_age: Duration) -> bool {
    (Utc::now() - tally.as_of)
        .to_std()
        .map_or(true, |age| age <= max_age)
}
