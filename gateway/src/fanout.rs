//! One upstream WatchResults stream per gateway, shared by every browser.
//!
//! A task holds the stream and publishes each tally on a `watch` channel;
//! each SSE client subscribes to the channel. A thousand open results pages
//! cost one gRPC stream, and a slow browser only ever skips to the newest
//! tally. When the stream breaks (the result service restarts), the task
//! reconnects with backoff; browsers keep their connection to the gateway.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use votemesh::shutdown::CancellationToken;

use crate::{upstream::Upstream, view::TallyView};

/// Handle to the shared results stream; cheap to clone.
#[derive(Clone, Debug)]
pub struct Fanout {
    latest: watch::Receiver<Option<TallyView>>,
    streams_opened: Arc<AtomicU64>,
}

impl Fanout {
    /// Starts the task that holds the upstream stream until `shutdown`.
    pub fn spawn(upstream: Upstream, shutdown: CancellationToken) -> Self {
        let (sender, latest) = watch::channel(None);
        let streams_opened = Arc::new(AtomicU64::new(0));
        tokio::spawn(hold_stream(
            upstream,
            sender,
            streams_opened.clone(),
            shutdown,
        ));
        Self {
            latest,
            streams_opened,
        }
    }

    /// A receiver of every new tally (the current one first, once known).
    pub fn subscribe(&self) -> watch::Receiver<Option<TallyView>> {
        self.latest.clone()
    }

    /// How many upstream WatchResults streams have been opened so far: one,
    /// plus one per reconnection, whatever the number of browsers.
    pub fn upstream_streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }
}

async fn hold_stream(
    upstream: Upstream,
    sender: watch::Sender<Option<TallyView>>,
    streams_opened: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = upstream.watch_results() => opened,
        };
        match opened {
            Ok(mut stream) => {
                streams_opened.fetch_add(1, Ordering::Relaxed);
                tracing::info!("results stream open");
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(tally)) => {
                            delays = backoff();
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
            Err(status) => tracing::debug!(%status, "cannot open the results stream yet"),
        }
        let pause = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
