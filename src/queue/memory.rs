//! The vote queue inside one process, for the all-in-one local run.
//!
//! It keeps the same shape as the Redis queue (a queue, one in-flight
//! batch, a dead-letter list, one rising sequence) and the same message
//! format, so the worker cannot tell the two apart. Nothing survives the
//! process: it is for trying votemesh out, not for keeping votes.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::Utc;
use tokio::sync::Notify;

use super::{Backlog, NewVote, QueueError, QueuedVote, VoteSink, VoteSource, next_sequence};

/// An in-process queue; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes a worker waiting for votes.
    pushed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting messages, oldest at the front.
    queued: VecDeque<String>,
    /// The batch the worker is writing (and the next one, taken meanwhile).
    in_flight: Vec<String>,
    /// Messages the worker could not parse.
    dead_letters: Vec<String>,
    /// The last sequence given out (to any voter).
    last_sequence: Option<i64>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pushes a raw message as if a producer had sent it (tests use this to
    /// queue a message that does not parse).
    pub fn push_raw(&self, message: impl Into<String>) {
        self.state().queued.push_back(message.into());
        self.inner.pushed.notify_one();
    }

    /// The messages moved to the dead-letter list so far.
    pub fn dead_letters(&self) -> Vec<String> {
        self.state().dead_letters.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-changed
        // (every change is a single push or move), so a poisoned lock is safe to use.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl VoteSink for MemoryQueue {
    async fn push(&self, vote: &NewVote) -> Result<QueuedVote, QueueError> {
        let queued = {
            let mut state = self.state();
            let sequence = next_sequence(state.last_sequence, Utc::now().timestamp_micros());
            state.last_sequence = Some(sequence);
            let queued = QueuedVote::stamped(vote, sequence);
            let message = serde_json::to_string(&queued)
                .map_err(|error| QueueError::Failed(format!("cannot encode the vote: {error}")))?;
            state.queued.push_back(message);
            queued
        };
        self.inner.pushed.notify_one();
        Ok(queued)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

impl VoteSource for MemoryQueue {
    async fn take_batch(&self, max: usize, wait: Duration) -> Result<Vec<String>, QueueError> {
        let take = || {
            let mut state = self.state();
            while state.in_flight.len() < max {
                let Some(message) = state.queued.pop_front() else {
                    break;
                };
                state.in_flight.push(message);
            }
            state.in_flight.clone()
        };
        let batch = take();
        if !batch.is_empty() || wait.is_zero() {
            return Ok(batch);
        }
        let _ = tokio::time::timeout(wait, self.inner.pushed.notified()).await;
        Ok(take())
    }

    async fn take_next(&self, max: usize) -> Result<Vec<String>, QueueError> {
        let mut state = self.state();
        let count = max.min(state.queued.len());
        let next: Vec<String> = state.queued.drain(..count).collect();
        state.in_flight.extend(next.iter().cloned());
        Ok(next)
    }

    async fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> Result<usize, QueueError> {
        let mut state = self.state();
        let mut removed = 0;
        for message in committed {
            let Some(at) = state.in_flight.iter().position(|held| held == message) else {
                continue;
            };
            let message = state.in_flight.remove(at);
            removed += 1;
            if dead_letters.contains(&message) {
                state.dead_letters.push(message);
            }
        }
        Ok(removed)
    }

    async fn reclaim_orphans(&self) -> Result<usize, QueueError> {
        // One process, one worker: nobody else can leave a batch behind.
        Ok(0)
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let state = self.state();
        Ok(Backlog::of(
            state.queued.len() as u64,
            state.queued.front().map(String::as_str),
        ))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
