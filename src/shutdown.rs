//! The shutdown signal: SIGTERM (what Kubernetes sends) or Ctrl-C.
//!
//! Every long-running task takes a [`CancellationToken`]; [`on_signal`]
//! returns one that is cancelled when the process is asked to stop, so a
//! task stops taking new work, finishes what it holds, and returns.

use std::{future::Future, time::Duration};

pub use tokio_util::sync::CancellationToken;

/// Longest a server waits, once shutdown began, for open connections and
/// calls to finish before it stops anyway. Kubernetes allows 30 s after
/// SIGTERM (less the 5 s preStop pause) before it kills the process.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `serve` (a server that drains when `shutdown` is cancelled) and
/// returns what it returns, or `on_timeout` if it is still draining
/// [`DRAIN_TIMEOUT`] after shutdown began: a client holding a stream open
/// must not keep the process alive.
pub async fn with_drain_deadline<T>(
    serve: impl Future<Output = T>,
    shutdown: &CancellationToken,
    on_timeout: T,
) -> T {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = serve => served,
        () = deadline => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; stopping anyway");
            on_timeout
        }
    }
}

/// Returns a token that is cancelled on the first SIGTERM or Ctrl-C.
///
/// Must be called inside a tokio runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: draining");
        cancel.cancel();
    });
    token
}

/// Completes when SIGTERM or Ctrl-C arrives. If the handlers cannot be
/// installed (no signal support), it never completes rather than stopping
/// the process at once.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
