//! Counters of what this worker has done since it started, behind GetStats
//! and, as the same numbers, in Prometheus (`votemesh_worker_*`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, updated by the drain loop, read by GetStats.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed.
    pub batches_committed: AtomicU64,
    /// Votes committed (including superseded ones).
    pub votes_committed: AtomicU64,
    /// Votes that changed nothing because a newer vote of the voter was known.
    pub votes_superseded: AtomicU64,
    /// Messages moved to the dead-letter list.
    pub dead_lettered: AtomicU64,
}

impl Stats {
    /// Adds one committed batch's numbers.
    pub fn record_batch(&self, votes: usize, superseded: usize, dead_lettered: usize) {
        metrics::counter!("votemesh_worker_batches_total").increment(1);
        metrics::histogram!("votemesh_worker_batch_size").record((votes + dead_lettered) as f64);
        metrics::counter!("votemesh_worker_votes_committed_total").increment(votes as u64);
        metrics::counter!("votemesh_worker_votes_superseded_total").increment(superseded as u64);
        metrics::counter!("votemesh_worker_dead_lettered_total").increment(dead_lettered as u64);
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.votes_committed
            .fetch_add(votes as u64, Ordering::Relaxed);
        self.votes_superseded
            .fetch_add(superseded as u64, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(dead_lettered as u64, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
