//! What the callers measure, shared between them: counts, failures by
//! kind, and latencies in HDR histograms (microseconds, 3 significant
//! digits). Callers write to one of several shards so they rarely wait
//! for each other; [`Recorder::latencies`] merges them.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;

use crate::target::CallFailure;

/// Longest latency recorded as itself (longer ones count as this).
const HIGHEST_MICROS: u64 = 120_000_000;
/// Histogram shards; callers pick one by their slot.
const SHARDS: usize = 16;

/// Counts and latencies of one run.
#[derive(Debug)]
pub struct Recorder {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    shards: Vec<Mutex<Histogram<u64>>>,
    /// The latencies of failed calls: how fast a refusal comes back.
    failed_shards: Vec<Mutex<Histogram<u64>>>,
    failures: Mutex<BTreeMap<CallFailure, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(empty())).collect(),
            failed_shards: (0..SHARDS).map(|_| Mutex::new(empty())).collect(),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// A call is about to be sent.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended after `latency`: acknowledged, or failed.
    pub fn record(&self, slot: usize, latency: Duration, outcome: Result<(), CallFailure>) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_MICROS);
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.shards[slot % SHARDS]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(micros);
            }
            Err(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.failed_shards[slot % SHARDS]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(micros);
                *self
                    .failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(failure)
                    .or_default() += 1;
            }
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
        merged(&self.shards)
    }

    /// The latencies of failed calls, in microseconds.
    pub fn failed_latencies(&self) -> Histogram<u64> {
        merged(&self.failed_shards)
    }
}

/// One histogram of every shard's samples.
fn merged(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut merged = empty();
    for shard in shards {
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // Same bounds on both sides: adding cannot fail.
        let _ = merged.add(&*shard);
    }
    merged
}

fn empty() -> Histogram<u64> {
    // 1 µs to HIGHEST_MICROS with 3 significant digits: valid bounds.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}
