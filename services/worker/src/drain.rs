//! The drain loop: take a batch, apply it, acknowledge it; repeat, with
//! the next batch taken (and parsed) while the database writes the one
//! before it:
//!
//! ```text
//! take_batch ─► apply k ─► ack k ─► apply k+1 ─► ack k+1 ─► ...
//!               take_next k+1       take_next k+2
//! ```
//!
//! So Redis, this process and PostgreSQL work at the same time, instead
//! of each waiting for the others. Only the writes are in order: batch k+1
//! is applied after batch k committed. It does so while there is a backlog
//! (batch k was full); otherwise the next take waits for the write, and
//! gathers what came meanwhile into one batch.
//!
//! Nothing is lost and nothing is counted twice because a batch stays in
//! this worker's processing list until the database committed it: a failure
//! anywhere before the acknowledgement (Redis or Postgres down, a crash)
//! leaves it, and the next batch taken beside it, to be taken again whole
//! ([`VoteSource::take_batch`] returns the whole list), and applying it
//! again changes nothing (see [`crate::apply`]). While a dependency fails,
//! the loop backs off exponentially and resumes by itself.
//!
//! The loop does not set readiness: it records how its last attempt went
//! in [`DrainStatus`], and the readiness probe ([`crate::run`]), the one
//! writer of readiness (docs/DESIGN.md, "The health model"), reports
//! NOT_SERVING while that attempt failed, even when Redis and PostgreSQL
//! answer their pings (a batch that times out, or that the database
//! refuses). With two writers, readiness flapped at every probe while
//! batches kept failing. On shutdown, the batch in hand and the next one,
//! already taken, are written before the loop stops.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures_util::future::try_join_all;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use votemesh::{
    backoff,
    queue::{QueueError, QueuedVote, VoteSource, shard::Shards},
    shutdown::CancellationToken,
    store::{Databases, ShardMap, StoreError},
    telemetry,
};

use crate::{
    apply::{self, Applied, ApplyError},
    batch,
    stats::Stats,
};

/// Longest one batch's transaction may take before it is abandoned (and
/// the batch retried).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a batch was not finished; it stays in the processing list.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Writing to the database failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The database did not finish the transaction in time.
    #[error("the database did not commit within {APPLY_TIMEOUT:?}")]
    Timeout,
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl BatchError {
    /// Whether the cause is a dependency being unreachable or slow (worth
    /// a warning) rather than something that needs a person (an error).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Apply(error) => error.is_transient(),
            Self::Timeout => true,
            Self::Queue(error) => error.is_transient(),
        }
    }

    /// Every value of [`BatchError::cause`].
    pub const CAUSES: [&'static str; 7] = [
        "database_unavailable",
        "database_failed",
        "database_timeout",
        "queue_unavailable",
        "queue_unconfirmed",
        "queue_full",
        "queue_failed",
    ];

    /// The `cause` label of `votemesh_worker_batch_failures_total`: which
    /// dependency failed, and how.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Apply(error) if error.is_transient() => "database_unavailable",
            Self::Apply(_) => "database_failed",
            Self::Timeout => "database_timeout",
            Self::Queue(QueueError::Unavailable(_)) => "queue_unavailable",
            Self::Queue(QueueError::Unconfirmed(_)) => "queue_unconfirmed",
            Self::Queue(QueueError::Full(_)) => "queue_full",
            Self::Queue(QueueError::Failed(_)) => "queue_failed",
        }
    }
}

/// How the drain loop behaves.
#[derive(Clone, Debug)]
pub struct DrainSettings {
    /// This worker's id: names its processing list. Must differ between
    /// workers sharing a queue, and stay the same across a restart for the
    /// worker to pick up its own batch at once (others reclaim it anyway).
    pub worker_id: String,
    /// Most votes per transaction.
    pub batch_size: usize,
    /// The queue's shards (`QUEUE_SHARDS`): where each voter's tally rows
    /// are, and, with several databases, which database holds the voter.
    pub shards: Shards,
    /// How long one wait for votes lasts when the queue is empty.
    pub idle_wait: Duration,
    /// The pause after a batch that emptied the queue, before the next
    /// take ([`crate::DEFAULT_BATCH_LINGER`]).
    pub linger: Duration,
    /// How often readiness is checked.
    pub probe_interval: Duration,
    /// How often the worker marks itself alive and reclaims dead workers' batches.
    pub heartbeat_interval: Duration,
    /// Longest pause between retries while a dependency is down.
    pub max_backoff: Duration,
    /// On shutdown, drain every queued vote before stopping. For the
    /// in-process queue, whose votes would be lost with the process; with
    /// Redis the votes wait there for the next worker.
    pub finish_queue_on_shutdown: bool,
}

impl DrainSettings {
    /// Defaults for a worker named `worker_id`.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            batch_size: crate::DEFAULT_BATCH_SIZE,
            shards: Shards::ONE,
            idle_wait: crate::DEFAULT_IDLE_WAIT,
            linger: crate::DEFAULT_BATCH_LINGER,
            probe_interval: votemesh::health::DEFAULT_PROBE_INTERVAL,
            heartbeat_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            finish_queue_on_shutdown: false,
        }
    }
}

/// How the drain loop's last attempt went: written by the loop, read by
/// the readiness probe. A failed attempt counts until one succeeds (a
/// batch committed and acknowledged, or a take that found the queue
/// empty); the batch that failed stays in the processing list, so the next
/// attempt retries it.
#[derive(Debug, Default)]
pub struct DrainStatus {
    /// `true` from a failed attempt until the next successful one.
    failing: AtomicBool,
}

impl DrainStatus {
    /// Records a successful attempt.
    pub fn succeeded(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    /// Records a failed attempt.
    pub fn failed(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    /// Whether the last attempt succeeded (or none was made yet).
    pub fn is_ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }
}

/// One worker's drain loop.
#[derive(Debug)]
pub struct Drainer<S> {
    source: Arc<S>,
    databases: Databases,
    stats: Arc<Stats>,
    status: Arc<DrainStatus>,
    settings: DrainSettings,
}

impl<S: VoteSource> Drainer<S> {
    /// A loop draining `source` into `databases`, recording each
    /// attempt's outcome in `status`.
    pub fn new(
        source: Arc<S>,
        databases: Databases,
        stats: Arc<Stats>,
        status: Arc<DrainStatus>,
        settings: DrainSettings,
    ) -> Self {
        Self {
            source,
            databases,
            stats,
            status,
            settings,
        }
    }

    /// Migrates the database, then drains until `shutdown`; the batch in
    /// hand is finished first (and, with
    /// [`DrainSettings::finish_queue_on_shutdown`], every queued vote).
    pub async fn run(self, shutdown: CancellationToken) {
        // Every failure series exists from the start, at zero.
        for cause in BatchError::CAUSES {
            metrics::counter!("votemesh_worker_batch_failures_total", "cause" => cause)
                .increment(0);
        }
        if !self.migrate(&shutdown).await {
            return;
        }
        let mut backoff = self.backoff();
        // The batch taken beside the one being written, to write next.
        let mut next: Option<Taken> = None;
        loop {
            let draining = shutdown.is_cancelled();
            let finish_queue = self.settings.finish_queue_on_shutdown;
            let batch = match next.take() {
                Some(batch) => batch,
                None if draining && !finish_queue => break,
                None => {
                    let wait = if draining {
                        Duration::ZERO
                    } else {
                        self.settings.idle_wait
                    };
                    let taken = tokio::select! {
                        () = shutdown.cancelled(), if !draining => continue,
                        taken = self.source.take_batch(self.settings.batch_size, wait) => taken,
                    };
                    match taken {
                        Ok(messages) if messages.is_empty() => {
                            self.status.succeeded();
                            if draining {
                                break;
                            }
                            backoff = self.backoff();
                            continue;
                        }
                        Ok(messages) => Taken::parse(messages),
                        Err(error) => {
                            if !self
                                .failed(BatchError::Queue(error), draining, &mut backoff, &shutdown)
                                .await
                            {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            // Write this batch while the next one is taken, when there is a
            // backlog (the batch is full: the queue held more). A smaller
            // batch means the queue was empty: the next take, after this
            // write, gathers what came meanwhile into one batch, where
            // taking now would make many small ones (each with its fixed
            // costs) of a steady trickle. When stopping, take no more
            // (unless the whole queue is to be drained).
            let take_next =
                (!draining || finish_queue) && batch.messages.len() >= self.settings.batch_size;
            let (written, taken_next) = tokio::join!(self.process(&batch), async {
                if take_next {
                    self.source
                        .take_next(self.settings.batch_size)
                        .await
                        .map(Taken::parse)
                } else {
                    Ok(Taken::default())
                }
            });
            let outcome = written.and(taken_next.map_err(BatchError::Queue));
            match outcome {
                Ok(taken) => {
                    backoff = self.backoff();
                    next = (!taken.messages.is_empty()).then_some(taken);
                    // This batch emptied the queue: let the next one gather
                    // for a moment rather than take the few votes that came
                    // during this write.
                    if !take_next && !draining && !self.settings.linger.is_zero() {
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = tokio::time::sleep(self.settings.linger) => {}
                        }
                    }
                }
                // Both batches stay in the processing list; the next
                // take_batch returns them whole.
                Err(error) => {
                    if !self.failed(error, draining, &mut backoff, &shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(worker_id = %self.settings.worker_id, "drain loop stopped");
    }

    /// Runs the migrations and records (or checks) each database's shard
    /// map, retrying while a database does not answer. Returns false if
    /// shutdown came first, or if a database holds other shards than this
    /// worker would write to it: then the loop stops, and with it the
    /// worker, rather than mix voters up.
    async fn migrate(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = self.backoff();
        loop {
            let error = match self.databases.migrate(self.settings.shards).await {
                Ok(()) => return true,
                Err(
                    error @ (StoreError::ShardMapConflict { .. }
                    | StoreError::UnrecordedDatabase { .. }
                    | StoreError::MoreDatabasesThanShards { .. }),
                ) => {
                    tracing::error!(%error, "refusing to write to the databases");
                    return false;
                }
                Err(error) => error,
            };
            let pause = backoff.next().unwrap_or(self.settings.max_backoff);
            tracing::warn!(%error, ?pause, "cannot migrate the database yet; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Counts, records and logs a failed batch, and pauses before the
    /// retry. Returns false when the loop should stop
    /// (it was stopping already, or shutdown came during the pause).
    async fn failed(
        &self,
        error: BatchError,
        draining: bool,
        backoff: &mut impl Iterator<Item = Duration>,
        shutdown: &CancellationToken,
    ) -> bool {
        metrics::counter!("votemesh_worker_batch_failures_total", "cause" => error.cause())
            .increment(1);
        self.status.failed();
        if draining {
            tracing::error!(%error, "stopping with votes still queued");
            return false;
        }
        let pause = backoff.next().unwrap_or(self.settings.max_backoff);
        if error.is_transient() {
            tracing::warn!(%error, ?pause, "batch not done; it stays in the processing list and will be retried");
        } else {
            tracing::error!(%error, ?pause, "batch failed; it stays in the processing list and will be retried");
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
        true
    }

    /// Applies and acknowledges one batch. On error the batch stays in the
    /// processing list.
    async fn process(&self, batch: &Taken) -> Result<(), BatchError> {
        let Taken { messages, parsed } = batch;
        let span = tracing::info_span!(
            "worker.apply_batch",
            batch.messages = messages.len(),
            batch.votes = parsed.votes.len(),
        );
        // Link the batch to the trace of each vote in it, up to the most
        // links a span keeps.
        let mut linked = 0;
        for vote in &parsed.votes {
            if linked == telemetry::MAX_LINKS_PER_SPAN {
                break;
            }
            let context = telemetry::context_from_carrier(&vote.trace_context);
            let span_context = opentelemetry::trace::TraceContextExt::span(&context)
                .span_context()
                .clone();
            if span_context.is_valid() {
                span.add_link(span_context);
                linked += 1;
            }
        }
        async {
            let applied = self.apply(&parsed.votes).await?;
            let dead_letters: Vec<String> = parsed
                .malformed
                .iter()
                .map(|(message, error)| {
                    tracing::warn!(%error, message = %preview(message), "malformed message moved to the dead-letter list");
                    message.clone()
                })
                .collect();
            self.source
                .ack_batch(messages, &dead_letters)
                .await
                .map_err(BatchError::Queue)?;
            self.stats
                .record_batch(parsed.votes.len(), applied.superseded, dead_letters.len());
            record_drain_lag(&parsed.votes);
            self.status.succeeded();
            tracing::debug!(
                votes = parsed.votes.len(),
                inserted = applied.inserted,
                updated = applied.updated,
                superseded = applied.superseded,
                dead_lettered = dead_letters.len(),
                "batch committed"
            );
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Applies the votes in one transaction per database that holds some
    /// of their voters, all at once. A transaction that hangs (a database
    /// lost without a reset) is given up after [`APPLY_TIMEOUT`]. If one
    /// database fails, the whole batch stays queued: applying it again
    /// changes nothing in the databases that committed.
    async fn apply(&self, votes: &[QueuedVote]) -> Result<Applied, BatchError> {
        match tokio::time::timeout(APPLY_TIMEOUT, self.apply_to_each_database(votes)).await {
            Ok(applied) => Ok(applied?),
            Err(_) => Err(BatchError::Timeout),
        }
    }

    /// Splits `votes` by the database that holds each voter and applies
    /// each part there; one database takes them all as they are.
    async fn apply_to_each_database(&self, votes: &[QueuedVote]) -> Result<Applied, ApplyError> {
        let shards = self.settings.shards;
        let count = self.databases.len();
        if count == 1
            && let Some(db) = self.databases.get(0)
        {
            return apply::apply_batch(db, votes, shards).await;
        }
        let databases = u16::try_from(count).unwrap_or(u16::MAX);
        let mut parts: Vec<Vec<QueuedVote>> = vec![Vec::new(); count];
        for vote in votes {
            let database =
                ShardMap::database_of(shards.index_of(&vote.voter_id), databases, shards);
            if let Some(part) = parts.get_mut(usize::from(database)) {
                part.push(vote.clone());
            }
        }
        let applied = try_join_all(
            self.databases
                .connections()
                .zip(&parts)
                .filter(|(_, part)| !part.is_empty())
                .map(|(db, part)| apply::apply_batch(db, part, shards)),
        )
        .await?;
        let mut total = Applied::default();
        for part in applied {
            total += part;
        }
        Ok(total)
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<S> {
        backoff::delays(self.settings.max_backoff)
    }
}

/// A batch as taken from the queue: its raw messages (what the
/// acknowledgement removes) and what they parse to.
#[derive(Debug, Default)]
struct Taken {
    messages: Vec<String>,
    parsed: batch::ParsedBatch,
}

impl Taken {
    fn parse(messages: Vec<String>) -> Self {
        let parsed = batch::parse(&messages);
        Self { messages, parsed }
    }
}

/// Marks the worker alive and returns dead workers' batches to the queue,
/// every `interval` until `shutdown`.
///
/// A failing heartbeat matters: once the last one is older than
/// [`votemesh::queue::redis::HEARTBEAT_TTL`], other workers take this
/// worker's batch away. So the first failure is a warning, as is the
/// recovery; the failures in between (one per tick) are only at debug.
pub async fn heartbeat<S: VoteSource>(
    source: Arc<S>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                match source.reclaim_orphans().await {
                    Ok(reclaimed) => {
                        metrics::counter!("votemesh_worker_reclaimed_total")
                            .increment(reclaimed as u64);
                        if let Some(since) = failing_since.take() {
                            tracing::warn!(failed_for = ?since.elapsed(), "heartbeat works again");
                        }
                    }
                    Err(error) if failing_since.is_none() => {
                        failing_since = Some(tokio::time::Instant::now());
                        tracing::warn!(%error, "heartbeat failed; other workers reclaim this worker's batch if it keeps failing; retrying");
                    }
                    Err(error) => tracing::debug!(%error, "heartbeat still failing"),
                }
            }
        }
    }
}

/// Records, for each vote of a committed batch, how long it took from its
/// acceptance by the vote service to its commit here
/// (`votemesh_worker_drain_lag_seconds`).
fn record_drain_lag(votes: &[QueuedVote]) {
    let committed_at = Utc::now();
    let lag = metrics::histogram!("votemesh_worker_drain_lag_seconds");
    for vote in votes {
        let waited = (committed_at - vote.cast_at).to_std().unwrap_or_default();
        lag.record(waited.as_secs_f64());
    }
}

/// The start of a message, for logs.
fn preview(message: &str) -> String {
    const MAX: usize = 200;
    if message.chars().count() <= MAX {
        message.to_owned()
    } else {
        format!("{}…", message.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sea_orm::{ConnAcquireErr, DbErr};

    use super::*;

    /// `CAUSES` (created at zero at start) and `cause()` (recorded on a
    /// failure) name the same labels: one error of every kind covers both.
    #[test]
    fn every_cause_is_listed_and_every_listed_cause_occurs() {
        let failures = [
            BatchError::Apply(ApplyError::Db(DbErr::ConnectionAcquire(
                ConnAcquireErr::Timeout,
            ))),
            BatchError::Apply(ApplyError::Db(DbErr::Custom("broken".into()))),
            BatchError::Timeout,
            BatchError::Queue(QueueError::Unavailable(String::new())),
            BatchError::Queue(QueueError::Unconfirmed(String::new())),
            BatchError::Queue(QueueError::Full(String::new())),
            BatchError::Queue(QueueError::Failed(String::new())),
        ];
        let seen: BTreeSet<&str> = failures.iter().map(BatchError::cause).collect();
        let listed: BTreeSet<&str> = BatchError::CAUSES.into_iter().collect();
        assert_eq!(seen, listed);
        assert_eq!(listed.len(), BatchError::CAUSES.len(), "listed twice");
    }
}
