//! A worker whose drain loop dies does not go on reporting SERVING: the
//! process stops with an error (so Kubernetes restarts it), on a real
//! Redis and PostgreSQL.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use votemesh::{
    grpc::GrpcError,
    queue::{Backlog, QueueError, VoteSource, redis::RedisWorkerQueue},
    store,
};
use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, TestServer};
use votemesh_worker::DrainSettings;

/// The real Redis queue, except that the drain loop's third take panics,
/// as a bug in the loop would.
struct PanicsOnThirdTake {
    queue: RedisWorkerQueue,
    takes: AtomicU32,
}

impl VoteSource for PanicsOnThirdTake {
    async fn take_batch(&self, max: usize, wait: Duration) -> Result<Vec<String>, QueueError> {
        if self.takes.fetch_add(1, Ordering::SeqCst) == 2 {
            panic!("a bug in the drain loop");
        }
        self.queue.take_batch(max, wait).await
    }

    async fn take_next(&self, max: usize) -> Result<Vec<String>, QueueError> {
        self.queue.take_next(max).await
    }

    async fn ack_batch(
        &self,
        committed: &[String],
        dead_letters: &[String],
    ) -> Result<usize, QueueError> {
        self.queue.ack_batch(committed, dead_letters).await
    }

    async fn reclaim_orphans(&self) -> Result<usize, QueueError> {
        self.queue.reclaim_orphans().await
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.queue.backlog().await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.queue.ping().await
    }
}

#[tokio::test]
async fn a_drain_loop_that_dies_stops_the_worker_with_an_error() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    let source = PanicsOnThirdTake {
        queue: votemesh::queue::redis::RedisQueue::new(&redis.url())
            .unwrap()
            .for_worker("doomed"),
        takes: AtomicU32::new(0),
    };
    let mut settings = DrainSettings::new("doomed");
    settings.idle_wait = Duration::from_millis(50);

    let (outcome_sender, outcome) = tokio::sync::oneshot::channel();
    let worker = TestServer::spawn(ANY_PORT, |listener, shutdown| async move {
        let outcome = votemesh_worker::run(listener, source, db, settings, shutdown).await;
        let _ = outcome_sender.send(outcome);
        Ok::<(), GrpcError>(())
    })
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), outcome)
        .await
        .expect("the worker stops by itself")
        .unwrap();
    match outcome {
        Err(GrpcError::TaskEnded(ended)) => {
            assert_eq!(ended.task, "drain loop");
            assert!(ended.reason.contains("a bug in the drain loop"), "{ended}");
        }
        other => panic!("expected the drain loop's end as the error, got {other:?}"),
    }
    assert!(
        worker.shutdown.is_cancelled(),
        "its shutdown (readiness NOT_SERVING, drain) was triggered"
    );
    worker.join(Duration::from_secs(30)).await;
}
