//! The vote pusher has an owner that notices its end: a pusher whose task
//! ended (as a panic would end it) turns the vote service's readiness
//! NOT_SERVING, is replaced, and votes go through again, instead of the
//! service answering SERVING while it refuses every vote.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use votemesh::{
    config::PollArgs,
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::{QUEUE_KEY, redis::RedisQueue},
};
use votemesh_testing::{ANY_PORT, RedisServer, TestServer};

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

/// Reads `updates` until `wanted`; fails the test after [`WAIT`].
async fn watch_until(
    updates: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    wanted: ServingStatus,
) {
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(update) = updates.next().await {
            if update.unwrap().status == wanted as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "readiness never turned {wanted:?} within {WAIT:?}"
    );
}

#[tokio::test]
async fn a_dead_pusher_turns_readiness_not_serving_and_is_replaced() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let owner = queue.clone();
    let poll = PollArgs::default().poll().unwrap();
    let service = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue,
            poll,
            "vote-under-test".into(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await
    .ready()
    .await;
    let channel = votemesh::client::connect(service.addr).await.unwrap();
    let mut votes = VoteServiceClient::new(channel.clone());
    votes.cast_vote(cast("before")).await.unwrap();

    let mut readiness = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch_until(&mut readiness, ServingStatus::Serving).await;

    owner.abort_pusher();
    watch_until(&mut readiness, ServingStatus::NotServing).await;
    watch_until(&mut readiness, ServingStatus::Serving).await;

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
    let poll = PollArgs::default().poll().unwrap();
    // A probe that never runs again after the first check: only the push
    // path is seen.
    let service = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue,
            poll,
            "vote-under-test".into(),
            Duration::from_secs(3600),
            shutdown,
        )
    })
    .await
    .ready()
    .await;
    let mut votes = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());
    votes.cast_vote(cast("before")).await.unwrap();
    owner.abort_pusher();
    let refused = votes.cast_vote(cast("refused")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    service.stop().await;
}
