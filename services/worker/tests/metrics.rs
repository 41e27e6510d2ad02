//! The worker's `/metrics` (on its gRPC port) against real Redis and
//! PostgreSQL: the vote-path counters move by exactly the votes drained,
//! dead-lettered and reclaimed, the drain-lag histogram by the votes
//! committed, and the queue and pool gauges are there. One test in its own
//! binary: the registry is per process.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use uuid::Uuid;
use votemesh::queue::{
    NewVote, QueuedVote, VoteSink, VoteSource, processing_key, redis::RedisQueue,
};
use votemesh_testing::{
    PostgresServer, RedisServer,
    metrics::{scrape, value},
    probe,
};
use votemesh_testing_services::{start_worker, worker_settings};

const WAIT: Duration = Duration::from_secs(30);

fn new_vote(voter: &str, option: &str, age: Duration) -> NewVote {
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: voter.into(),
        option_id: option.into(),
        cast_at: Utc::now() - age,
        trace_context: HashMap::new(),
        idempotency: None,
    }
}

#[tokio::test]
async fn vote_path_metrics_move_by_exactly_the_votes_drained() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();

    // Ten votes, the first of them a minute old; one message that is not a
    // vote; and two votes in the processing list of a worker that is gone
    // (no heartbeat), for this worker to reclaim.
    let oldest = new_vote("voter-0", "a", Duration::from_secs(60));
    queue.push(&oldest).await.unwrap();
    for voter in 1..10 {
        let vote = new_vote(&format!("voter-{voter}"), "b", Duration::ZERO);
        queue.push(&vote).await.unwrap();
    }
    redis
        .command(&["LPUSH", votemesh::queue::QUEUE_KEY, "not a vote"])
        .await
        .unwrap();
    let orphans = processing_key("gone-worker");
    for voter in ["orphan-1", "orphan-2"] {
        let vote = QueuedVote::stamped(&new_vote(voter, "a", Duration::ZERO), 1);
        let message = serde_json::to_string(&vote).unwrap();
        redis.command(&["LPUSH", &orphans, &message]).await.unwrap();
    }

    // What the worker's probe samples: eleven waiting, the oldest vote first.
    let backlog = queue.for_worker("looking").backlog().await.unwrap();
    assert_eq!(backlog.depth, 11);
    assert_eq!(backlog.oldest_cast_at, Some(oldest.cast_at));
    assert!(backlog.oldest_age(Utc::now()) >= Duration::from_secs(60));

    let worker = start_worker(&redis, &postgres, worker_settings("metered")).await;
    let committed = probe::wait_for_value("12 votes committed", WAIT, || async {
        let metrics = scrape(worker.addr).await.ok()?;
        let committed = value(&metrics, "votemesh_worker_votes_committed_total", &[]);
        let depth_sampled = value(&metrics, "votemesh_queue_depth", &[]) == 0.0
            && value(
                &metrics,
                "votemesh_redis_pool_connections",
                &[("state", "idle")],
            ) + value(
                &metrics,
                "votemesh_redis_pool_connections",
                &[("state", "busy")],
            ) >= 1.0;
        (committed == 12.0 && depth_sampled).then_some(metrics)
    })
    .await;
    let metrics = committed;
    assert_eq!(
        value(&metrics, "votemesh_worker_dead_lettered_total", &[]),
        1.0
    );
    assert_eq!(value(&metrics, "votemesh_worker_reclaimed_total", &[]), 2.0);
    assert_eq!(
        value(&metrics, "votemesh_worker_drain_lag_seconds", &[]),
        12.0,
        "one drain-lag sample per vote committed"
    );
    let batches = value(&metrics, "votemesh_worker_batches_total", &[]);
    assert!(batches >= 1.0);
    assert_eq!(value(&metrics, "votemesh_worker_batch_size", &[]), batches);
    assert_eq!(
        value(&metrics, "votemesh_queue_oldest_age_seconds", &[]),
        0.0,
        "nothing waits any more"
    );
    let pool = |state| {
        value(
            &metrics,
            "votemesh_db_pool_connections",
            &[("state", state)],
        )
    };
    assert!(pool("idle") + pool("busy") >= 1.0, "the pool's connections");
    for cause in votemesh_worker::drain::BatchError::CAUSES {
        let failures = [("cause", cause)];
        assert_eq!(
            value(&metrics, "votemesh_worker_batch_failures_total", &failures),
            0.0,
            "{cause}"
        );
    }
    worker.stop().await;
}
