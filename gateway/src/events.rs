//! One browser's live results stream (`GET /api/results/stream`): what it
//! holds while open, what it writes, and the limits on how many are open.
//!
//! ```text
//! pacer ─► watch<Frame> ─► TallyEvents (one per browser) ─► writer ─► socket
//!          newest only      a retry hint and the current tally at once,    (handover:
//!                           then each newer tally, or a keep-alive comment  past hyper)
//! ```
//!
//! A stream is kept small because a gateway holds tens of thousands: a
//! `watch` receiver (with its one reusable wait), the number of the last
//! tally it wrote, its permit and a handle to the shared counters. It has
//! no timer (the pacer ticks for every stream), renders nothing (the pacer
//! rendered each tally once) and buffers nothing: its writer
//! ([`crate::handover`], which holds the socket once the head is ready,
//! not hyper) asks for the next event only when it can write it, and by
//! then the stream writes the newest tally, skipping any it missed
//! (counted). A client that stops reading, or vanishes, is not ended here
//! (its stream is not even polled while nothing can be written): the kernel
//! closes its connection after `TCP_USER_TIMEOUT`
//! ([`crate::connections::USER_TIMEOUT`]), and with it the stream. One that
//! closes its side ends its stream at once.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use clap::builder::TypedValueParser;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::WatchStream;

use crate::pacing::{Frame, KEEP_ALIVE_EVENT, StreamCounters};

/// Default of `RESULTS_MAX_STREAMS`: open results streams per gateway
/// before new ones get 503 with `Retry-After`. Each holds a file
/// descriptor.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// A browser waits at least this long before reconnecting a broken stream
/// (the SSE `retry:` hint)...
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// ...plus a random part of up to this much, different per stream, so the
/// streams of a gateway that went away come back spread over
/// `RETRY_MIN..RETRY_MIN + RETRY_JITTER` instead of all at once.
pub const RETRY_JITTER: Duration = Duration::from_secs(4);

/// Limits on the live results streams (`RESULTS_*`).
#[derive(Clone, Debug, clap::Args)]
pub struct ResultsArgs {
    /// Open results streams (`/api/results/stream`) per gateway; past it,
    /// new ones get 503 with Retry-After and the page polls
    /// `/api/results` instead. Each stream holds a file descriptor.
    #[arg(long, env = "RESULTS_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub results_max_streams: usize,
    /// Shortest time between two tally events on a results stream, in
    /// milliseconds: changes within it go out as one event, the newest.
    /// A stream shows a change within this interval plus the delivery
    /// time. 0 sends every change.
    #[arg(long, env = "RESULTS_MIN_INTERVAL_MS", default_value_t = crate::pacing::DEFAULT_MIN_INTERVAL.as_millis() as u64, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub results_min_interval_ms: u64,
}

impl Default for ResultsArgs {
    fn default() -> Self {
        Self {
            results_max_streams: DEFAULT_MAX_STREAMS,
            results_min_interval_ms: crate::pacing::DEFAULT_MIN_INTERVAL.as_millis() as u64,
        }
    }
}

/// The cap on open results streams: one permit per stream.
#[derive(Clone, Debug)]
pub struct StreamCap {
    permits: Arc<Semaphore>,
    max: usize,
}

/// How many results streams are open, for `GET /readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StreamCount {
    /// Open now.
    pub open: usize,
    /// The cap (`RESULTS_MAX_STREAMS`).
    pub max: usize,
}

impl StreamCap {
    /// A cap of `max` open streams.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more stream, unless `max` are open.
    pub fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// How many are open, of how many.
    pub fn count(&self) -> StreamCount {
        StreamCount {
            open: self.max.saturating_sub(self.permits.available_permits()),
            max: self.max,
        }
    }
}

/// The events of one open results stream, as the response body's chunks.
/// Ends when the gateway shuts down (a stream opened then gets its retry
/// hint, then ends).
pub struct TallyEvents {
    frames: WatchStream<Frame>,
    /// The number of the last tally written (0: none yet).
    written_seq: u64,
    /// Whether the first frame (retry hint and current tally) was sent.
    started: bool,
    /// The gateway shuts down: the next poll ends the stream.
    ended: bool,
    counters: Arc<StreamCounters>,
    /// Holds the stream's place under `RESULTS_MAX_STREAMS` and in the
    /// `votemesh_sse_clients` gauge until the stream ends.
    _open: OpenStream,
}

impl TallyEvents {
    /// A stream following `frames` (from its current frame on), holding `permit` while it lives.
    pub fn new(
        frames: tokio::sync::watch::Receiver<Frame>,
        counters: Arc<StreamCounters>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            frames: WatchStream::new(frames),
            written_seq: 0,
            started: false,
            ended: false,
            counters,
            _open: OpenStream::new(permit),
        }
    }

    /// What to write for `frame`, if anything; `Err` ends the stream.
    fn write(&mut self, frame: Frame) -> Result<Option<Bytes>, ()> {
        if frame.closing {
            if self.started {
                return Err(());
            }
            // Opened while the gateway shuts down: tell the browser when
            // to come back (to another gateway), then end.
            self.started = true;
            self.ended = true;
            return Ok(Some(Bytes::from(retry_hint())));
        }
        let first = !self.started;
        self.started = true;
        let tally = match frame.tally {
            Some(tally) if frame.tally_seq != self.written_seq => {
                if self.written_seq > 0 {
                    let skipped = frame.tally_seq.saturating_sub(self.written_seq + 1);
                    if skipped > 0 {
                        self.counters.skipped.fetch_add(skipped, Ordering::Relaxed);
                    }
                }
                self.written_seq = frame.tally_seq;
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                Some(tally)
            }
            _ => None,
        };
        Ok(match (first, tally) {
            // The first write: when to reconnect, then the tally now.
            (true, tally) => {
                let mut start = retry_hint().into_bytes();
                if let Some(tally) = tally {
                    start.extend_from_slice(&tally);
                }
                Some(Bytes::from(start))
            }
            (false, Some(tally)) => Some(tally),
            (false, None) if frame.keep_alive => Some(Bytes::from_static(KEEP_ALIVE_EVENT)),
            (false, None) => None,
        })
    }
}

impl Stream for TallyEvents {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            let frame = match Pin::new(&mut self.frames).poll_next(cx) {
                Poll::Ready(Some(frame)) => frame,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match self.write(frame) {
                Ok(Some(bytes)) => return Poll::Ready(Some(Ok(bytes))),
                Ok(None) => continue,
                Err(()) => return Poll::Ready(None),
            }
        }
    }
}

/// The SSE `retry:` line for one stream: [`RETRY_MIN`] plus a random part
/// of [`RETRY_JITTER`], in milliseconds.
pub fn retry_hint() -> String {
    let jitter_ms = RETRY_JITTER.as_millis() as u64;
    let retry = RETRY_MIN.as_millis() as u64 + fastrand::u64(0..jitter_ms.max(1));
    format!("retry: {retry}\n\n")
}

/// One open stream: holds its permit and counts in the
/// `votemesh_sse_clients` gauge while it lives.
struct OpenStream {
    _permit: OwnedSemaphorePermit,
}

impl OpenStream {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("votemesh_sse_clients").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("votemesh_sse_clients").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_opened_during_shutdown_gets_its_retry_hint_then_ends() {
        use futures_util::StreamExt;
        let (_sender, frames) = tokio::sync::watch::channel(Frame {
            closing: true,
            ..Frame::default()
        });
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut events = TallyEvents::new(frames, Arc::default(), permit);
        let first = events.next().await.expect("a first chunk").unwrap();
        assert!(first.starts_with(b"retry: "), "{first:?}");
        assert!(events.next().await.is_none());
    }

    #[test]
    fn retry_hints_are_spread_over_the_jitter() {
        let hints: std::collections::BTreeSet<String> = (0..50).map(|_| retry_hint()).collect();
        assert!(hints.len() > 10, "{hints:?}");
        for hint in &hints {
            let ms: u64 = hint
                .strip_prefix("retry: ")
                .and_then(|rest| rest.trim_end().parse().ok())
                .unwrap();
            assert!((1000..5000).contains(&ms), "{hint}");
        }
    }
}
