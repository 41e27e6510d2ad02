//! The shutdown signal: SIGTERM (what Kubernetes sends) or Ctrl-C.
//!
//! Every long-running task takes a [`CancellationToken`]; [`on_signal`]
//! returns one that is cancelled when the process is asked to stop, so a
//! task stops taking new work, finishes what it holds, and returns.

pub use tokio_util::sync::CancellationToken;

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
