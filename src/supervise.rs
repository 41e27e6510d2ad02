//! Who owns each background task, and what happens when one ends.
//!
//! Every spawned task has an owner that notices its end. Two policies:
//!
//! - **Stop the process** ([`critical`], [`serve_with`]): for the tasks a
//!   component cannot do without (the worker's drain loop, the result
//!   service's tally poller, a readiness probe). If one ends while the
//!   component is still meant to run, the component must not go on
//!   reporting SERVING with nothing behind it: the end (a panic, or a bug
//!   that returns) is logged at error, and the component's shutdown is
//!   triggered, which turns readiness NOT_SERVING and drains the server;
//!   the caller then returns [`TaskEnded`], `main` exits non-zero, and the
//!   orchestrator (Kubernetes, compose) restarts the process clean.
//! - **Restart the task** ([`restarting`]): for side jobs whose owner is a
//!   value rather than the component (the TLS identity's reload, a
//!   balanced channel's resolver, the gateway's sweep of idle rate-limit
//!   keys). The component still serves while such a task is down (the
//!   identity in use stays valid, the balancer keeps the addresses it
//!   has, the limiter keeps limiting), so stopping the process would turn
//!   a bug in a side job into an outage; and readiness would have nothing
//!   to report, since the task is running again one [`RESTART_PAUSE`]
//!   later. A panic is logged at error with its message and the task
//!   starts again; the returned guard, held by the owner, ends it when
//!   dropped (mini-redis's `DbDropGuard`).
//!
//! The vote service's pusher is a third case, readiness and restart, owned
//! by `queue::redis::RedisQueue`: while it is down every vote is refused,
//! so the vote service's readiness says so until a new one runs.

use std::{future::Future, time::Duration};

use futures_util::future::join_all;
use thiserror::Error;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
/// The guard [`restarting`] returns: dropping it ends the task.
pub use tokio_util::sync::DropGuard;

/// How long [`restarting`] waits before it starts a task that panicked
/// again, so that a task that panics at once does not spin.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

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

/// Runs the task `start` makes, named `name` in logs, restarting it after
/// a panic (a new task from `start`, after [`RESTART_PAUSE`]); see the
/// module's doc for when this is the right policy. Ends when the task
/// returns (its work is done: what it served is gone) or when the returned
/// guard is dropped, which aborts it at once. Must be called inside a tokio
/// runtime.
pub fn restarting<F, Fut>(name: &'static str, mut start: F) -> DropGuard
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        loop {
            let mut task = tokio::spawn(start());
            let outcome = tokio::select! {
                () = stop.cancelled() => {
                    task.abort();
                    return;
                }
                outcome = &mut task => outcome,
            };
            if outcome.is_ok() {
                return;
            }
            let reason = why_ended(outcome);
            tracing::error!(task = name, %reason, pause = ?RESTART_PAUSE, "a background task stopped; restarting it");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RESTART_PAUSE) => {}
            }
        }
    });
    guard
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
    async fn a_restarting_task_starts_again_after_a_panic_and_ends_with_its_guard() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let starts = Arc::new(AtomicUsize::new(0));
        let (running, mut alive) = tokio::sync::mpsc::channel::<()>(1);
        let guard = restarting("test task", {
            let starts = starts.clone();
            move || {
                let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
                let running = running.clone();
                async move {
                    assert!(!first, "the first start panics");
                    // Holds `running` until aborted.
                    let _running = running;
                    std::future::pending::<()>().await;
                }
            }
        });
        let wait = std::time::Duration::from_secs(10);
        tokio::time::timeout(wait, async {
            while starts.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the task is started again");
        drop(guard);
        // Every sender gone: the task (and the supervisor's copy of `start`)
        // ended with the guard.
        let ended = tokio::time::timeout(wait, alive.recv()).await;
        assert_eq!(ended, Ok(None), "the task ends when its guard is dropped");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
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
