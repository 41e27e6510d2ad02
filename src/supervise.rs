//! Background tasks a component cannot do without (the worker's drain
//! loop, the result service's tally poller, a readiness probe): if one
//! ends while the component is still meant to run, the component must not
//! go on reporting SERVING with nothing behind it.
//!
//! [`critical`] waits for such a task. An unexpected end (a panic, or a
//! bug that returns) is logged at error, and the component's shutdown is
//! triggered, which turns readiness NOT_SERVING and drains the server; the
//! caller then returns [`TaskEnded`], `main` exits non-zero, and the
//! orchestrator (Kubernetes, compose) restarts the process clean.

use std::future::Future;

use futures_util::future::join_all;
use thiserror::Error;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A critical background task ended while the component was running.
#[derive(Debug, Error)]
#[error("the {task} stopped unexpectedly ({reason}); stopping so that it is restarted")]
pub struct TaskEnded {
    /// Which task, such as `drain loop`.
    pub task: &'static str,
    /// Why: its panic message, or that it returned.
    pub reason: String,
}

/// Waits for `task`, which should run until `shutdown`. `Ok` if it ended
/// after shutdown was asked for; otherwise logs, cancels `shutdown`, and
/// returns why it ended.
pub async fn critical(
    name: &'static str,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
) -> Result<(), TaskEnded> {
    let outcome = task.await;
    if shutdown.is_cancelled() && outcome.is_ok() {
        return Ok(());
    }
    let reason = why_ended(outcome);
    tracing::error!(task = name, %reason, "a critical task stopped; shutting down");
    shutdown.cancel();
    Err(TaskEnded { task: name, reason })
}

/// How a task ended, for logs and errors: its panic message, that it
/// returned, or that it was cancelled (aborted).
pub fn why_ended(outcome: Result<(), JoinError>) -> String {
    match outcome {
        Ok(()) => "it returned".to_owned(),
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            format!("panicked: {message}")
        }
        Err(_) => "it was cancelled".to_owned(),
    }
}

/// Runs a component: its server (`serve`) beside the background tasks it
/// needs, until both are done. The server stopping, for shutdown or
/// because it failed, stops the tasks too (a server gone must not leave
/// the process running); a task ending early stops the server (see
/// [`critical`]). Returns the server's error, else the first task's.
pub async fn serve_with<E: From<TaskEnded>>(
    serve: impl Future<Output = Result<(), E>>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    shutdown: CancellationToken,
) -> Result<(), E> {
    let serve = async {
        let served = serve.await;
        shutdown.cancel();
        served
    };
    let watched = join_all(
        tasks
            .into_iter()
            .map(|(name, task)| critical(name, task, shutdown.clone())),
    );
    let (served, watched) = tokio::join!(serve, watched);
    served?;
    watched
        .into_iter()
        .collect::<Result<Vec<()>, TaskEnded>>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unexpected_end_triggers_shutdown_and_says_why() {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(async { panic!("boom") });
        let ended = critical("test task", task, shutdown.clone())
            .await
            .unwrap_err();
        assert!(shutdown.is_cancelled());
        assert_eq!(ended.task, "test task");
        assert!(ended.reason.contains("boom"), "{ended}");

        let shutdown = CancellationToken::new();
        let ended = critical("quitter", tokio::spawn(async {}), shutdown.clone())
            .await
            .unwrap_err();
        assert!(shutdown.is_cancelled());
        assert_eq!(ended.reason, "it returned");
    }

    #[tokio::test]
    async fn a_failed_server_stops_its_tasks_and_says_why() {
        let shutdown = CancellationToken::new();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        let failed = async {
            Err::<(), TaskEnded>(TaskEnded {
                task: "server",
                reason: "bind".into(),
            })
        };
        let outcome = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            serve_with(failed, vec![("loop", task)], shutdown.clone()),
        )
        .await
        .expect("the tasks stop with the server");
        assert_eq!(outcome.unwrap_err().reason, "bind");
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn an_end_after_shutdown_is_normal() {
        let shutdown = CancellationToken::new();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        shutdown.cancel();
        assert!(critical("loop", task, shutdown).await.is_ok());
    }
}
