//! The vote queue inside one process, for the all-in-one local run.
//!
//! It keeps the same shape as the Redis queue (a queue, one processing
//! list, a dead-letter list, one rising sequence), the same message format
//! and the same contract ([`VoteSink`] + [`VoteSource`], run against both
//! queues by `tests/queue_contract.rs`), so the worker cannot tell the two
//! apart:
//!
//! ```text
//! push ─► queued (oldest at the front) ─take─► processing ─ack─► gone
//!                                              (one worker)  └─► dead letters
//! ```
//!
//! It is bounded, since the all-in-one binary listens on every interface
//! and any caller could otherwise grow it: at [`CAPACITY`] messages queued
//! or in flight a push is refused with [`QueueError::Full`] (the vote
//! service answers RESOURCE_EXHAUSTED, as it does when Redis is at
//! `maxmemory`) and nothing already queued is touched; the worker's moves
//! and acknowledgements never grow it, so it drains as Redis does when
//! full. The dead-letter list keeps the newest [`DEAD_LETTER_CAPACITY`]
//! messages: refusing a dead letter would mean refusing the
//! acknowledgement of its batch, which would then be written again and
//! again while the queue fills up, so the oldest dead letter is dropped
//! instead (with a warning). A vote pushed with an idempotency key leaves a
//! marker for its repeat window, as in Redis, so a retried call is answered
//! as its first attempt and not queued again ([`crate::idempotency`]); the
//! markers are forgotten as their windows pass, and at most [`CAPACITY`]
//! are kept. Nothing survives the process: it is for trying
//! votemesh out, not for keeping votes.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::Utc;
use tokio::{sync::Notify, time::Instant};

use super::{Backlog, NewVote, QueueError, QueuedVote, VoteSink, VoteSource, next_sequence};

/// Most messages the queue holds, queued and in flight together: a push
/// beyond it is refused with [`QueueError::Full`]. A vote is a few hundred
/// bytes of JSON, so a full queue takes a few tens of MB: far more backlog
/// than a local run needs, far less memory than a flood could take.
pub const CAPACITY: usize = 100_000;

/// Most messages the dead-letter list keeps; beyond it the oldest is
/// dropped (and a warning logged), so the newest are there to inspect.
pub const DEAD_LETTER_CAPACITY: usize = 1_000;

/// An in-process queue; clones share it.
#[derive(Clone, Debug)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes a worker waiting for votes.
    pushed: Notify,
    /// Most messages queued and in flight together.
    capacity: usize,
    /// Most messages in the dead-letter list.
    dead_letter_capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting messages, oldest at the front.
    queued: VecDeque<String>,
    /// The processing list: the batch the worker is writing (and the next
    /// one, taken meanwhile), oldest first. Takes hand it out newest first,
    /// as Redis' processing list holds it.
    in_flight: Vec<String>,
    /// Messages the worker could not parse, oldest at the front.
    dead_letters: VecDeque<String>,
    /// The last sequence given out (to any voter).
    last_sequence: Option<i64>,
    /// The votes pushed with an idempotency key in their repeat window,
    /// by marker key ([`super::request_key`]), as Redis keeps them.
    markers: HashMap<String, Marker>,
    /// Marker keys in the order they were set, to forget them once
    /// expired (or, past [`CAPACITY`] of them, the oldest).
    marker_order: VecDeque<(Instant, String)>,
}

/// What a repeat of a call is answered with, until `expires`.
#[derive(Debug)]
struct Marker {
    first: QueuedVote,
    expires: Instant,
}

impl State {
    /// Forgets markers whose window has passed (in the order they were
    /// set: windows differ, so one may outlive those behind it by at most
    /// [`crate::idempotency::MAX_REPEAT_WINDOW`]), and the oldest beyond
    /// `max`.
    fn forget_markers(&mut self, now: Instant, max: usize) {
        while let Some((expires, _)) = self.marker_order.front() {
            if *expires > now && self.markers.len() <= max {
                break;
            }
            let Some((expires, key)) = self.marker_order.pop_front() else {
                break;
            };
            // A key set again after its marker expired has a later entry.
            if self.markers.get(&key).is_some_and(|m| m.expires == expires) {
                self.markers.remove(&key);
            }
        }
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue holding at most [`CAPACITY`] messages and
    /// [`DEAD_LETTER_CAPACITY`] dead letters.
    pub fn new() -> Self {
        Self::with_limits(CAPACITY, DEAD_LETTER_CAPACITY)
    }

    /// An empty queue holding at most `capacity` messages queued and in
    /// flight together (0: it refuses every push) and the newest
    /// `dead_letter_capacity` dead letters.
    pub fn with_limits(capacity: usize, dead_letter_capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                pushed: Notify::new(),
                capacity,
                dead_letter_capacity,
            }),
        }
    }

    /// Pushes a raw message as if a producer had sent it (tests use this to
    /// queue a message that does not parse). Refused as a vote is when the
    /// queue is full.
    pub fn push_raw(&self, message: impl Into<String>) -> Result<(), QueueError> {
        {
            let mut state = self.state();
            self.check_room(&state)?;
            state.queued.push_back(message.into());
        }
        self.inner.pushed.notify_one();
        Ok(())
    }

    /// The messages moved to the dead-letter list and still kept, oldest
    /// first.
    pub fn dead_letters(&self) -> Vec<String> {
        self.state().dead_letters.iter().cloned().collect()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-changed
        // (every change is a single push or move), so a poisoned lock is safe to use.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`QueueError::Full`] when one more message would pass the capacity.
    fn check_room(&self, state: &State) -> Result<(), QueueError> {
        let held = state.queued.len() + state.in_flight.len();
        if held >= self.inner.capacity {
            return Err(QueueError::Full(format!(
                "the in-process queue holds {held} votes, its capacity"
            )));
        }
        Ok(())
    }

    /// Moves up to `max` of the oldest queued messages to the processing
    /// list (oldest first, as `LMOVE queue processing RIGHT LEFT` would)
    /// and returns how many it moved.
    fn move_oldest(state: &mut State, max: usize) -> usize {
        let count = max.min(state.queued.len());
        let State {
            queued, in_flight, ..
        } = state;
        in_flight.extend(queued.drain(..count));
        count
    }

    /// The whole processing list topped up to `max`, newest first.
    fn top_up(&self, max: usize) -> Vec<String> {
        let mut state = self.state();
        let missing = max.saturating_sub(state.in_flight.len());
        Self::move_oldest(&mut state, missing);
        state.in_flight.iter().rev().cloned().collect()
    }
}

impl VoteSink for MemoryQueue {
    async fn push(&self, vote: &NewVote) -> Result<QueuedVote, QueueError> {
        let queued = {
            let mut state = self.state();
            let now = Instant::now();
            state.forget_markers(now, self.inner.capacity);
            let marker_key = vote.idempotency.as_ref().map(|idempotency| {
                (
                    super::request_key(&idempotency.key, &vote.voter_id),
                    idempotency.window,
                )
            });
            if let Some((key, _)) = &marker_key
                && let Some(marker) = state.markers.get(key).filter(|m| m.expires > now)
            {
                // A repeat of a call already queued: answered as it was.
                return Ok(marker.first.clone());
            }
            self.check_room(&state)?;
            let sequence = next_sequence(state.last_sequence, Utc::now().timestamp_micros());
            let queued = QueuedVote::stamped(vote, sequence);
            let message = serde_json::to_string(&queued)
                .map_err(|error| QueueError::Failed(format!("cannot encode the vote: {error}")))?;
            state.last_sequence = Some(sequence);
            state.queued.push_back(message);
            if let Some((key, window)) = marker_key {
                let expires = now + window;
                state.marker_order.push_back((expires, key.clone()));
                state.markers.insert(
                    key,
                    Marker {
                        first: queued.clone(),
                        expires,
                    },
                );
            }
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
        let deadline = Instant::now() + wait;
        loop {
            let batch = self.top_up(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            // A wake-up may be stale (a push the previous take already
            // took): wait again until the deadline.
            let woken = tokio::time::timeout_at(deadline, self.inner.pushed.notified()).await;
            if woken.is_err() {
                return Ok(self.top_up(max));
            }
        }
    }

    async fn take_next(&self, max: usize) -> Result<Vec<String>, QueueError> {
        let mut state = self.state();
        let moved = Self::move_oldest(&mut state, max);
        let start = state.in_flight.len() - moved;
        Ok(state.in_flight[start..].iter().rev().cloned().collect())
    }

    async fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> Result<usize, QueueError> {
        if committed.is_empty() {
            return Ok(0);
        }
        // One pass over the processing list: each committed message
        // removes one copy of itself, the one nearest the consuming end
        // (the oldest), as the Redis script's LREM does.
        let mut to_remove: HashMap<&str, usize> = HashMap::with_capacity(committed.len());
        for message in committed {
            *to_remove.entry(message.as_str()).or_default() += 1;
        }
        let dead: HashSet<&str> = dead_letters.iter().map(String::as_str).collect();
        let mut state = self.state();
        let removed: Vec<String> = state
            .in_flight
            .extract_if(.., |held| match to_remove.get_mut(held.as_str()) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            })
            .collect();
        let count = removed.len();
        let mut dropped = 0;
        for message in removed {
            if dead.contains(message.as_str()) {
                state.dead_letters.push_back(message);
                if state.dead_letters.len() > self.inner.dead_letter_capacity {
                    state.dead_letters.pop_front();
                    dropped += 1;
                }
            }
        }
        drop(state);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                capacity = self.inner.dead_letter_capacity,
                "the in-process dead-letter list is full: dropped its oldest messages"
            );
        }
        Ok(count)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn new_vote(voter: &str) -> NewVote {
        NewVote {
            vote_id: uuid::Uuid::new_v4(),
            voter_id: voter.into(),
            option_id: "a".into(),
            cast_at: Utc::now(),
            trace_context: HashMap::new(),
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn at_its_capacity_a_push_is_refused_as_full_and_nothing_held_is_lost() {
        let queue = MemoryQueue::with_limits(3, DEAD_LETTER_CAPACITY);
        let mut held = Vec::new();
        for voter in ["v0", "v1", "v2"] {
            held.push(queue.push(&new_vote(voter)).await.unwrap());
        }
        let refused = queue.push(&new_vote("v3")).await.unwrap_err();
        assert!(matches!(refused, QueueError::Full(_)), "{refused:?}");
        assert!(refused.is_transient());
        assert!(matches!(queue.push_raw("x"), Err(QueueError::Full(_))));
        assert_eq!(queue.backlog().await.unwrap().depth, 3);

        // In-flight votes count too: taking a batch makes no room.
        let batch = queue.take_batch(2, Duration::ZERO).await.unwrap();
        assert!(matches!(
            queue.push(&new_vote("v3")).await,
            Err(QueueError::Full(_))
        ));
        // Acknowledging it does; every vote held is there, in order.
        assert_eq!(queue.ack_batch(&batch, &[]).await.unwrap(), 2);
        let v4 = queue.push(&new_vote("v4")).await.unwrap();
        let rest = queue.take_batch(10, Duration::ZERO).await.unwrap();
        let mut taken: Vec<QueuedVote> = batch
            .iter()
            .chain(&rest)
            .map(|message| QueuedVote::parse(message).unwrap())
            .collect();
        taken.sort_by_key(|vote| vote.sequence);
        held.push(v4);
        assert_eq!(taken, held);
    }

    #[tokio::test]
    async fn the_dead_letter_list_keeps_the_newest() {
        let queue = MemoryQueue::with_limits(10, 2);
        for message in ["d1", "d2", "d3"] {
            queue.push_raw(message).unwrap();
        }
        let batch = queue.take_batch(10, Duration::ZERO).await.unwrap();
        assert_eq!(queue.ack_batch(&batch, &batch).await.unwrap(), 3);
        assert_eq!(queue.dead_letters(), ["d2", "d3"]);
        queue.push_raw("d4").unwrap();
        let batch = queue.take_batch(10, Duration::ZERO).await.unwrap();
        assert_eq!(queue.ack_batch(&batch, &batch).await.unwrap(), 1);
        assert_eq!(queue.dead_letters(), ["d3", "d4"]);
    }
}
