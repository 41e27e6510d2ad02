//! What the callers measure, shared between them: counts, failures by
//! kind, latencies in HDR histograms (microseconds, 3 significant
//! digits), and the run second by second ([`Second`]: when the slow
//! answers came). Callers write to one of several shards so they rarely
//! wait for each other; [`Recorder::latencies`] and
//! [`Recorder::timeline`] merge them.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::target::CallFailure;

/// Longest latency recorded as itself (longer ones count as this).
const HIGHEST_MICROS: u64 = 120_000_000;
/// Histogram shards; callers pick one by their slot.
const SHARDS: usize = 16;
/// A failure slower than this counts in [`Second::failed_slow`]: issue
/// 24's goal for a refusal under overload.
pub const SLOW_FAILURE: Duration = Duration::from_millis(10);
/// Seconds of a run the timeline keeps; later calls count in the last.
/// An hour holds the soak's longest run (30 minutes) and bounds what a
/// run `--forever` (the vote bot) keeps: 16 shards of 3,600 seconds of
/// 40 bytes, about 2.3 MB at most.
const TIMELINE_SECONDS: usize = 3600;

/// What happened to the calls due (sent, in a closed loop) in one second
/// of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second {
    /// Calls acknowledged.
    pub ok: u64,
    /// The slowest acknowledged call, µs.
    pub ok_max_micros: u64,
    /// Calls failed.
    pub failed: u64,
    /// Calls failed after more than [`SLOW_FAILURE`].
    pub failed_slow: u64,
    /// The slowest failed call, µs.
    pub failed_max_micros: u64,
}

impl Second {
    fn add(&mut self, other: &Self) {
        self.ok += other.ok;
        self.ok_max_micros = self.ok_max_micros.max(other.ok_max_micros);
        self.failed += other.failed;
        self.failed_slow += other.failed_slow;
        self.failed_max_micros = self.failed_max_micros.max(other.failed_max_micros);
    }
}

/// Counts and latencies of one run.
#[derive(Debug)]
pub struct Recorder {
    /// When the run began: second 0 of the timeline.
    started: Instant,
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    shards: Vec<Mutex<Shard>>,
    failures: Mutex<BTreeMap<CallFailure, u64>>,
}

/// What the callers of one shard recorded.
#[derive(Debug)]
struct Shard {
    /// The latencies of acknowledged calls.
    ok: Histogram<u64>,
    /// The latencies of failed calls: how fast a refusal comes back.
    failed: Histogram<u64>,
    /// By second of the run the call was due in.
    seconds: Vec<Second>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder; its run begins now.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// An empty recorder whose run began at `started`.
    fn starting_at(started: Instant) -> Self {
        Self {
            started,
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        ok: empty(),
                        failed: empty(),
                        seconds: Vec::new(),
                    })
                })
                .collect(),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// A call is about to be sent.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended after `latency`: acknowledged, or failed. It counts
    /// in the timeline's second it was due in (now less its latency).
    pub fn record(&self, slot: usize, latency: Duration, outcome: Result<(), CallFailure>) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_MICROS);
        let due = Instant::now()
            .checked_sub(latency)
            .map_or(Duration::ZERO, |due| {
                due.saturating_duration_since(self.started)
            });
        let second = usize::try_from(due.as_secs())
            .unwrap_or(usize::MAX)
            .min(TIMELINE_SECONDS - 1);
        let failed = outcome.is_err();
        if let Err(failure) = outcome {
            *self
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(failure)
                .or_default() += 1;
        }
        let counter = if failed { &self.failed } else { &self.ok };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shards[slot % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.seconds.len() <= second {
            shard.seconds.resize(second + 1, Second::default());
        }
        let counts = &mut shard.seconds[second];
        if failed {
            counts.failed += 1;
            counts.failed_slow += u64::from(latency > SLOW_FAILURE);
            counts.failed_max_micros = counts.failed_max_micros.max(micros);
            shard.failed.saturating_record(micros);
        } else {
            counts.ok += 1;
            counts.ok_max_micros = counts.ok_max_micros.max(micros);
            shard.ok.saturating_record(micros);
        }
    }

    /// Calls sent, acknowledged and failed so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Failures by kind.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(failure, count)| (failure.0.clone(), *count))
            .collect()
    }

    /// The latencies of acknowledged calls, in microseconds.
    pub fn latencies(&self) -> Histogram<u64> {
        self.merged(|shard| &shard.ok)
    }

    /// The latencies of failed calls, in microseconds.
    pub fn failed_latencies(&self) -> Histogram<u64> {
        self.merged(|shard| &shard.failed)
    }

    /// The run second by second, from the first second a call was due in
    /// to the last.
    pub fn timeline(&self) -> Vec<Second> {
        let mut timeline: Vec<Second> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if timeline.len() < shard.seconds.len() {
                timeline.resize(shard.seconds.len(), Second::default());
            }
            for (sum, second) in timeline.iter_mut().zip(&shard.seconds) {
                sum.add(second);
            }
        }
        timeline
    }

    /// One histogram of every shard's samples of one kind.
    fn merged(&self, kind: impl Fn(&Shard) -> &Histogram<u64>) -> Histogram<u64> {
        let mut merged = empty();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides: adding cannot fail.
            let _ = merged.add(kind(&shard));
        }
        merged
    }
}

fn empty() -> Histogram<u64> {
    // 1 µs to HIGHEST_MICROS with 3 significant digits: valid bounds.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<(), CallFailure> {
        Err(CallFailure("HTTP 503".to_owned()))
    }

    #[test]
    fn a_call_counts_in_the_second_it_was_due_in_and_a_slow_refusal_is_told_apart() {
        let recorder = Recorder::starting_at(Instant::now() - Duration::from_millis(3_500));
        // Due 3 s ago, half a second into the run; answered now.
        recorder.record(0, Duration::from_secs(3), Ok(()));
        recorder.record(1, Duration::from_secs(3), refused());
        // Due now, in the run's fourth second: one refusal fast, one slow.
        recorder.record(2, Duration::from_millis(2), refused());
        recorder.record(3, SLOW_FAILURE + Duration::from_millis(5), refused());

        let timeline = recorder.timeline();
        assert_eq!(timeline.len(), 4, "{timeline:?}");
        assert_eq!(
            timeline[0],
            Second {
                ok: 1,
                ok_max_micros: 3_000_000,
                failed: 1,
                failed_slow: 1,
                failed_max_micros: 3_000_000,
            }
        );
        assert_eq!(timeline[1], Second::default());
        assert_eq!(timeline[2], Second::default());
        assert_eq!(
            timeline[3],
            Second {
                ok: 0,
                ok_max_micros: 0,
                failed: 2,
                failed_slow: 1,
                failed_max_micros: 15_000,
            }
        );
        assert_eq!(recorder.counts(), (0, 1, 3));
        assert_eq!(recorder.failed_latencies().len(), 3);
    }
}
