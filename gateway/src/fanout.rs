//! One upstream WatchResults stream per gateway, shared by every browser.
//!
//! A task holds the stream and publishes each tally on a `watch` channel;
//! each SSE client subscribes to the channel. A thousand open results pages
//! cost one gRPC stream, and a slow browser only ever skips to the newest
//! tally. When the stream breaks (the result service restarts), the task
//! reconnects with backoff; browsers keep their connection to the gateway.
//! Browsers' streams do not follow this channel directly: the pacer
//! ([`crate::pacing`]) renders and paces what they write.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;

use tokio::sync::watch;
use votemesh::{backoff, shutdown::CancellationToken, supervise};

use crate::{upstream::Upstream, view::TallyView};

/// Longest pause between attempts to reopen the upstream stream.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Handle to the shared results stream; cheap to clone.
#[derive(Clone, Debug)]
pub struct Fanout {
    latest: watch::Receiver<Option<TallyView>>,
    stream: Arc<StreamState>,
    /// Ends the task when the last clone goes.
    _task: Arc<supervise::DropGuard>,
}

/// What the upstream stream is doing, as `GET /readyz` reports it.
#[derive(Debug, Default)]
struct StreamState {
    /// Whether a WatchResults stream is open now.
    open: AtomicBool,
    /// Streams opened since start: one, plus one per reconnection,
    /// whatever the number of browsers.
    opened: AtomicU64,
    /// Tallies received since start (the pacer counts those it merged).
    changes: Arc<AtomicU64>,
}

/// A snapshot of the upstream results stream, for operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    /// Whether the gateway holds an open WatchResults stream now.
    pub open: bool,
    /// How many it opened since it started (1 + reconnections).
    pub opened: u64,
}

impl Fanout {
    /// Starts the task that holds the upstream stream until `shutdown`,
    /// restarted if it ever panics ([`supervise::restarting`]; it has no
    /// other way to end early). The task belongs to the `Fanout`: it ends
    /// with `shutdown`, or when the last clone is dropped.
    pub fn spawn(upstream: Upstream, shutdown: CancellationToken) -> Self {
        let (sender, latest) = watch::channel(None);
        let sender = Arc::new(sender);
        let stream = Arc::new(StreamState::default());
        let task = {
            let stream = stream.clone();
            supervise::restarting("results fan-out", move || {
                // A start after a panic: no stream is open until this one
                // opens it.
                stream.open.store(false, Ordering::Relaxed);
                hold_stream(
                    upstream.clone(),
                    sender.clone(),
                    stream.clone(),
                    shutdown.clone(),
                )
            })
        };
        Self {
            latest,
            stream,
            _task: Arc::new(task),
        }
    }

    /// A receiver of every new tally (the current one first, once known).
    pub fn subscribe(&self) -> watch::Receiver<Option<TallyView>> {
        self.latest.clone()
    }

    /// How many tallies the upstream stream brought since start.
    pub fn changes(&self) -> Arc<AtomicU64> {
        self.stream.changes.clone()
    }

    /// The latest tally the stream brought, if any.
    pub fn latest(&self) -> Option<TallyView> {
        self.latest.borrow().clone()
    }

    /// Whether the upstream stream is open, and how often it was opened.
    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            open: self.stream.open.load(Ordering::Relaxed),
            opened: self.stream.opened.load(Ordering::Relaxed),
        }
    }
}

/// Holds one WatchResults stream at a time and publishes every tally,
/// reopening the stream with backoff when it breaks. Logs each change of
/// state once (at warn when the stream is lost, at info when it is back).
async fn hold_stream(
    upstream: Upstream,
    sender: Arc<watch::Sender<Option<TallyView>>>,
    stream_state: Arc<StreamState>,
    shutdown: CancellationToken,
) {
    let backoff = || backoff::delays(MAX_RECONNECT_DELAY);
    let mut delays = backoff();
    // Whether a failure to open was already logged.
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = upstream.watch_results() => opened,
        };
        match opened {
            Ok(mut stream) => {
                stream_state.opened.fetch_add(1, Ordering::Relaxed);
                stream_state.open.store(true, Ordering::Relaxed);
                metrics::counter!("votemesh_results_stream_opens_total").increment(1);
                metrics::gauge!("votemesh_results_stream_open").set(1.0);
                failing = false;
                tracing::info!("results stream open");
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(tally)) => {
                            delays = backoff();
                            stream_state.changes.fetch_add(1, Ordering::Relaxed);
                            sender.send_replace(Some(TallyView::from(tally)));
                        }
                        Ok(None) => {
                            tracing::warn!("results stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%status, "results stream broke; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(status) if !failing => {
                tracing::warn!(%status, "cannot open the results stream; retrying with backoff");
                failing = true;
            }
            Err(status) => tracing::debug!(%status, "cannot open the results stream yet"),
        }
        stream_state.open.store(false, Ordering::Relaxed);
        metrics::gauge!("votemesh_results_stream_open").set(0.0);
        let pause = delays.next().unwrap_or(MAX_RECONNECT_DELAY);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
