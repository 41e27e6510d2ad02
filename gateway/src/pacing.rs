//! The live results as every open results stream writes them: each tally
//! rendered once as a server-sent event, published at most once per
//! interval.
//!
//! ```text
//! fan-out (every upstream tally) ─► pacer task ─► watch<Frame> ─► every SSE stream
//!                                   renders once, at most one tally per interval,
//!                                   a keep-alive comment every KEEP_ALIVE
//! ```
//!
//! One task per gateway does the work that would otherwise be done per
//! stream: it serializes each tally once into [`Bytes`] that every stream
//! writes as is (a reference count, not a copy), it bounds the rate of
//! events (the first change after a quiet spell goes out at once, the
//! changes within the next interval are merged into one event at its end),
//! and it ticks the keep-alive, so a stream holds no timer of its own.
//! The `watch` channel keeps only the newest frame: a stream that cannot
//! write skips to the newest tally, it never builds a backlog.
//!
//! The pacer also moves the streams' shared counters into the metrics
//! every [`METRICS_FLUSH`], so a write costs a stream one atomic add.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::body::Bytes;
use tokio::sync::watch;
use votemesh::{shutdown::CancellationToken, supervise};

use crate::view::TallyView;

/// Default of `RESULTS_MIN_INTERVAL_MS`: the shortest time between two
/// tally events on one stream.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// How often a stream gets a comment line when no tally changes, so that
/// proxies and load balancers do not close it as idle.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the streams' counters are moved into the metrics.
pub const METRICS_FLUSH: Duration = Duration::from_secs(1);
/// The keep-alive event: an SSE comment, which browsers ignore.
pub const KEEP_ALIVE_EVENT: &[u8] = b":\n\n";

/// The newest state of the live results, as the streams follow it.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    /// The newest tally as a complete `tally` event (`event: tally`, one
    /// `data:` line of JSON, a blank line), once one is known.
    pub tally: Option<Bytes>,
    /// Numbers the tallies published: 0 before the first, then 1, 2, ...
    /// A stream that wrote tally `n` and now sees `n + k` skipped `k - 1`.
    pub tally_seq: u64,
    /// This frame is a keep-alive tick (the tally did not change).
    pub keep_alive: bool,
    /// The gateway shuts down: streams end.
    pub closing: bool,
}

/// Counters every stream adds to with one atomic operation; the pacer
/// moves them into the metrics.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Tally events written to streams.
    pub written: AtomicU64,
    /// Published tallies a stream skipped because it could not write them
    /// in time (it got the newer one instead).
    pub skipped: AtomicU64,
}

impl StreamCounters {
    /// Moves what the streams counted since the last flush into the
    /// metrics. Taking the counts (a swap to zero) rather than
    /// remembering what was flushed means a restarted pacer neither counts
    /// anything twice nor loses it.
    fn flush(&self) {
        metrics::counter!("votemesh_results_events_written_total")
            .increment(self.written.swap(0, Ordering::Relaxed));
        metrics::counter!("votemesh_results_changes_coalesced_total", "stage" => "stream")
            .increment(self.skipped.swap(0, Ordering::Relaxed));
    }
}

/// Handle to the pacer; cheap to clone. The pacer's task belongs to it:
/// it ends with the gateway's shutdown or when the last clone goes.
#[derive(Clone, Debug)]
pub struct Pacing {
    frames: watch::Receiver<Frame>,
    /// Shortest time between two published tallies, in milliseconds.
    min_interval_ms: Arc<AtomicU64>,
    counters: Arc<StreamCounters>,
    _task: Arc<supervise::DropGuard>,
}

impl Pacing {
    /// Starts the pacer over `tallies` (the fan-out's newest tally) and
    /// `changes` (how many tallies the fan-out received, to count the ones
    /// merged), until `shutdown`.
    pub fn spawn(
        tallies: watch::Receiver<Option<TallyView>>,
        changes: Arc<AtomicU64>,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, frames) = watch::channel(Frame::default());
        let sender = Arc::new(sender);
        let min_interval_ms = Arc::new(AtomicU64::new(DEFAULT_MIN_INTERVAL.as_millis() as u64));
        let counters = Arc::new(StreamCounters::default());
        let task = {
            let min_interval_ms = min_interval_ms.clone();
            let counters = counters.clone();
            supervise::restarting("results pacer", move || {
                pace(
                    tallies.clone(),
                    changes.clone(),
                    sender.clone(),
                    min_interval_ms.clone(),
                    counters.clone(),
                    shutdown.clone(),
                )
            })
        };
        Self {
            frames,
            min_interval_ms,
            counters,
            _task: Arc::new(task),
        }
    }

    /// Sets the shortest time between two tally events on a stream
    /// (zero: every tally the fan-out gets, as soon as it gets it).
    pub fn set_min_interval(&self, interval: Duration) {
        self.min_interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// A receiver of the frames.
    pub fn subscribe(&self) -> watch::Receiver<Frame> {
        self.frames.clone()
    }

    /// The counters a stream adds to.
    pub fn counters(&self) -> &Arc<StreamCounters> {
        &self.counters
    }
}

/// Renders `tally` as one `tally` event. JSON from serde_json has no
/// line breaks, so one `data:` line carries it.
pub fn render(tally: &TallyView) -> Option<Bytes> {
    let mut event = b"event: tally\ndata: ".to_vec();
    serde_json::to_writer(&mut event, tally).ok()?;
    event.extend_from_slice(b"\n\n");
    Some(Bytes::from(event))
}

/// Publishes the newest tally at most once per interval, a keep-alive
/// tick every [`KEEP_ALIVE`], and the closing frame at `shutdown`.
async fn pace(
    mut tallies: watch::Receiver<Option<TallyView>>,
    changes: Arc<AtomicU64>,
    frames: Arc<watch::Sender<Frame>>,
    min_interval_ms: Arc<AtomicU64>,
    counters: Arc<StreamCounters>,
    shutdown: CancellationToken,
) {
    // A (re)start publishes the tally known now, if any.
    tallies.mark_changed();
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keep_alive.reset();
    let mut flush = tokio::time::interval(METRICS_FLUSH);
    // Changes received by the fan-out that are accounted for.
    let mut changes_seen = changes.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                counters.flush();
                frames.send_modify(|frame| frame.closing = true);
                return;
            }
            _ = flush.tick() => {
                counters.flush();
                continue;
            }
            _ = keep_alive.tick() => {
                frames.send_modify(|frame| frame.keep_alive = true);
                continue;
            }
            changed = tallies.changed() => {
                if changed.is_err() {
                    // The fan-out is gone: so is the gateway.
                    return;
                }
            }
        }
        let tally = tallies.borrow_and_update().clone();
        let received = changes.load(Ordering::Relaxed);
        let merged = received.saturating_sub(changes_seen).saturating_sub(1);
        changes_seen = received;
        if merged > 0 {
            metrics::counter!("votemesh_results_changes_coalesced_total", "stage" => "pacing")
                .increment(merged);
        }
        if let Some(event) = tally.as_ref().and_then(render) {
            frames.send_modify(|frame| {
                frame.tally = Some(event);
                frame.tally_seq += 1;
                frame.keep_alive = false;
            });
            keep_alive.reset();
        }
        // The changes of the next interval wait, and go out as one.
        let interval = Duration::from_millis(min_interval_ms.load(Ordering::Relaxed));
        if !interval.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::OptionView;

    /// The value of the counter line starting with `series` (0 if absent).
    fn counter(series: &str) -> u64 {
        votemesh::metrics::render()
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_flush_moves_each_count_into_the_metrics_once() {
        const WRITTEN: &str = "votemesh_results_events_written_total ";
        votemesh::metrics::install();
        let before = counter(WRITTEN);
        let counters = StreamCounters::default();
        counters.written.fetch_add(5, Ordering::Relaxed);
        counters.flush();
        // A restarted pacer flushes the same counters again.
        counters.flush();
        assert_eq!(counter(WRITTEN) - before, 5);
        assert_eq!(counters.written.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_tally_renders_as_one_event_with_one_data_line() {
        let tally = TallyView {
            options: vec![OptionView {
                id: "a".into(),
                label: "Cats\nand more".into(),
                count: 1,
                percent: 100.0,
            }],
            total: 1,
            as_of: None,
            stale: false,
        };
        let event = render(&tally).unwrap();
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("event: tally\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 3, "{text}");
    }
}
