//! The vote pusher has an owner that notices its end: a pusher whose task
//! ended (as a panic would end it) turns the vote service's readiness
//! NOT_SERVING, is replaced, and votes go through again, instead of the
//! service answering SERVING while it refuses every vote.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::PollArgs,
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::{QUEUE_KEY, redis::RedisQueue},
};
use votemesh_testing::{ANY_PORT, RedisServer, TestServer, probe};

/// Bounds a hang; not a performance assertion.
const WAIT: Duration = Duration::from_secs(20);
/// Long enough that a NOT_SERVING between two probes reaches a watcher.
const PROBE_INTERVAL: Duration = Duration::from_millis(300);

fn cast(voter_id: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: "a".into(),
    }
}

/// The vote service over `queue`, its readiness probed every
/// `probe_interval`, ready.
async fn start_vote_on(queue: RedisQueue, probe_interval: Duration) -> TestServer {
    let poll = PollArgs::default().poll().unwrap();
    TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue,
            poll,
            "vote-under-test".into(),
            probe_interval,
            shutdown,
        )
    })
    .await
    .ready()
    .await
}

#[tokio::test]
async fn a_dead_pusher_turns_readiness_not_serving_and_is_replaced() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let owner = queue.clone();
    let service = start_vote_on(queue, PROBE_INTERVAL).await;
    let channel = votemesh::client::connect(service.addr).await.unwrap();
    let mut votes = VoteServiceClient::new(channel);
    votes.cast_vote(cast("before")).await.unwrap();

    let mut readiness = probe::watch_health(service.addr, "").await.unwrap();
    probe::watch_until(&mut readiness, ServingStatus::Serving, WAIT).await;

    owner.abort_pusher();
    probe::watch_until(&mut readiness, ServingStatus::NotServing, WAIT).await;
    probe::watch_until(&mut readiness, ServingStatus::Serving, WAIT).await;

    // The new pusher takes votes again.
    votes.cast_vote(cast("after")).await.unwrap();
    let queued = redis.command(&["LLEN", QUEUE_KEY]).await.unwrap();
    assert_eq!(
        queued.trim(),
        ":2",
        "both votes are queued (an integer reply)"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_vote_sent_to_a_dead_pusher_is_refused_as_unavailable() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let owner = queue.clone();
    // A probe that never runs again after the first check: only the push
    // path is seen.
    let service = start_vote_on(queue, Duration::from_secs(3600)).await;
    let mut votes = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());
    votes.cast_vote(cast("before")).await.unwrap();
    owner.abort_pusher();
    let refused = votes.cast_vote(cast("refused")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    service.stop().await;
}
