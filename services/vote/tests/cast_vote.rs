//! The vote service against a real redis-server: what CastVote accepts,
//! what it refuses, and how it behaves while Redis is down.

use std::{net::SocketAddr, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    proto::v1::{CastVoteRequest, ListOptionsRequest, vote_service_client::VoteServiceClient},
    queue::{QUEUE_KEY, QueuedVote},
};
use votemesh_testing::{
    RedisServer, TestServer, probe,
    services::{ANY_PORT, SERVED_BY, start_vote},
};

const WAIT: Duration = Duration::from_secs(20);

async fn client(service: &TestServer) -> VoteServiceClient<tonic::transport::Channel> {
    VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap())
}

fn cast(voter_id: &str, option: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: option.into(),
    }
}

async fn queued(redis: &RedisServer) -> Vec<QueuedVote> {
    let reply = redis
        .command(&["LRANGE", QUEUE_KEY, "0", "-1"])
        .await
        .unwrap();
    reply
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| QueuedVote::parse(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_valid_vote_is_queued_with_a_sequence_and_acknowledged() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = client(&service).await;

    let first = client
        .cast_vote(cast("v1", "a"))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .cast_vote(cast("v1", "b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.served_by, SERVED_BY);
    assert!(first.cast_at.is_some());
    assert_ne!(first.vote_id, second.vote_id);

    let votes = queued(&redis).await;
    assert_eq!(votes.len(), 2);
    let (newer, older) = (&votes[0], &votes[1]);
    assert_eq!((older.option.as_str(), newer.option.as_str()), ("a", "b"));
    assert!(
        newer.sequence > older.sequence,
        "a later vote of a voter has a higher sequence"
    );
    assert_eq!(older.vote_id.to_string(), first.vote_id);

    let options = client
        .list_options(ListOptionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let labels: Vec<(String, String)> = options
        .options
        .into_iter()
        .map(|o| (o.id, o.label))
        .collect();
    assert_eq!(
        labels,
        [("a".into(), "Cats".into()), ("b".into(), "Dogs".into())]
    );
    service.stop().await;
}

#[tokio::test]
async fn every_invalid_vote_is_refused_with_invalid_argument_and_nothing_is_queued() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = client(&service).await;

    let long = "x".repeat(129);
    let cases = [
        (cast("", "a"), "voter_id is empty"),
        (cast(&long, "a"), "129 characters"),
        (cast("bad\u{7}id", "a"), "non-printable"),
        (cast("v1", ""), "option is empty"),
        (
            cast("v1", "c"),
            "not an option of this poll; the options are: a, b",
        ),
        (cast("v1", "A"), "not an option of this poll"),
    ];
    for (request, expected) in cases {
        let status = client.cast_vote(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains(expected),
            "{request:?}: message {:?} should contain {expected:?}",
            status.message()
        );
    }
    assert!(queued(&redis).await.is_empty());
    // 128 characters is still fine.
    client.cast_vote(cast(&"y".repeat(128), "a")).await.unwrap();
    assert_eq!(queued(&redis).await.len(), 1);
    service.stop().await;
}

#[tokio::test]
async fn redis_down_means_unavailable_and_not_serving_then_recovers_by_itself() {
    let mut redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = client(&service).await;
    client.cast_vote(cast("v1", "a")).await.unwrap();

    redis.stop().await;
    let status = client.cast_vote(cast("v2", "a")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for name in ["", votemesh_vote::SERVICE_NAME] {
        probe::wait_for("readiness NOT_SERVING", WAIT, || async {
            probe::health(service.addr, name).await == Ok(ServingStatus::NotServing)
        })
        .await;
    }
    assert_eq!(
        probe::health(service.addr, "liveness").await,
        Ok(ServingStatus::Serving),
        "liveness does not follow dependencies"
    );

    redis.restart().await.unwrap();
    probe::wait_for("readiness SERVING again", WAIT, || async {
        probe::health(service.addr, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    client.cast_vote(cast("v3", "b")).await.unwrap();
    let votes = queued(&redis).await;
    assert_eq!(
        votes.len(),
        1,
        "the restarted Redis is empty but for the new vote"
    );
    assert_eq!(votes[0].voter_id, "v3");
    service.stop().await;
}

#[tokio::test]
async fn health_names_and_reflection_follow_the_design() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    for name in ["", "liveness", votemesh_vote::SERVICE_NAME] {
        assert_eq!(
            probe::health(service.addr, name).await,
            Ok(ServingStatus::Serving),
            "{name:?}"
        );
    }
    assert_eq!(
        probe::health(service.addr, "nope").await,
        Err(Code::NotFound)
    );

    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        votemesh_vote::SERVICE_NAME,
    ];
    assert_eq!(
        probe::reflected_services(service.addr, probe::Reflection::V1)
            .await
            .unwrap(),
        expected
    );
    assert_eq!(
        probe::reflected_services(service.addr, probe::Reflection::V1Alpha)
            .await
            .unwrap(),
        expected
    );
    service.stop().await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_to_watchers_and_returns() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let channel = votemesh::client::connect(service.addr).await.unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    service.shutdown.cancel();
    let mut saw_not_serving = false;
    while let Ok(Some(update)) = watch.message().await {
        if update.status() == ServingStatus::NotServing {
            saw_not_serving = true;
            break;
        }
    }
    assert!(
        saw_not_serving,
        "a health watcher sees NOT_SERVING on shutdown"
    );
    // The watch stream then ends, so it does not hold the drain open: the
    // server stops with the watcher still connected.
    let end = tokio::time::timeout(WAIT, watch.message()).await.unwrap();
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the watch stream ended: {end:?}"
    );
    // Well before the drain timeout.
    service.join(Duration::from_secs(5)).await;
}

/// `votemesh-vote --health-check` against this service: what Docker's
/// HEALTHCHECK runs in the image.
fn binary_health_check(addr: SocketAddr) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_votemesh-vote"))
        .args(["--health-check", "--listen", &addr.to_string()])
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_binary_health_check_follows_readiness() {
    let mut redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let addr = service.addr;
    let healthy = tokio::task::spawn_blocking(move || binary_health_check(addr))
        .await
        .unwrap();
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(String::from_utf8_lossy(&healthy.stdout).trim(), "healthy");

    redis.stop().await;
    probe::wait_for("readiness NOT_SERVING", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    let unhealthy = tokio::task::spawn_blocking(move || binary_health_check(addr))
        .await
        .unwrap();
    assert!(!unhealthy.status.success());
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains("NOT_SERVING"),
        "{unhealthy:?}"
    );
    service.stop().await;

    let nothing = tokio::task::spawn_blocking(move || binary_health_check(addr))
        .await
        .unwrap();
    assert!(!nothing.status.success(), "no server, not healthy");
}
