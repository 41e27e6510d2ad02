//! The vote service over the in-process queue (the all-in-one run's
//! default) at its capacity: CastVote answers RESOURCE_EXHAUSTED, as it
//! does when Redis is at `maxmemory`, loses none of the votes it took, and
//! takes votes again once the worker made room.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::{
        QueuedVote, VoteSource,
        memory::{DEAD_LETTER_CAPACITY, MemoryQueue},
    },
};
use votemesh_testing::{ANY_PORT, TestServer, probe};
use votemesh_testing_services::{PROBE_INTERVAL, SERVED_BY, cats_and_dogs};

/// The capacity under test: small, so the test fills it in a few calls.
const CAPACITY: usize = 3;

fn cast(voter_id: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: "a".into(),
    }
}

#[tokio::test]
async fn a_full_in_process_queue_refuses_votes_with_resource_exhausted_and_loses_none() {
    let queue = MemoryQueue::with_limits(CAPACITY, DEAD_LETTER_CAPACITY);
    let service = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue.clone(),
            cats_and_dogs(),
            SERVED_BY.to_owned(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await
    .ready()
    .await;
    let mut client = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());

    for voter in 0..CAPACITY {
        client.cast_vote(cast(&format!("v{voter}"))).await.unwrap();
    }
    let refused = client.cast_vote(cast("one-too-many")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("retry later"), "{refused:?}");
    assert_eq!(
        probe::health(service.addr, "").await,
        Ok(ServingStatus::Serving),
        "a full queue is an answer, not an outage"
    );

    // The worker takes and acknowledges what was queued: every vote
    // acknowledged, and not the refused one.
    let batch = queue.take_batch(10, Duration::ZERO).await.unwrap();
    let mut voters: Vec<String> = batch
        .iter()
        .map(|message| QueuedVote::parse(message).unwrap().voter_id)
        .collect();
    voters.sort();
    assert_eq!(voters, ["v0", "v1", "v2"]);
    assert_eq!(queue.ack_batch(&batch, &[]).await.unwrap(), CAPACITY);

    client.cast_vote(cast("one-too-many")).await.unwrap();
    assert_eq!(queue.backlog().await.unwrap().depth, 1);
    service.stop().await;
}
