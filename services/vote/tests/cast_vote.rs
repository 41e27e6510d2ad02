//! The vote service against a real redis-server: what CastVote accepts,
//! what it refuses, and how it behaves while Redis is down, slow or full.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    proto::v1::{CastVoteRequest, ListOptionsRequest, vote_service_client::VoteServiceClient},
    queue::{NewVote, QUEUE_KEY, QueueError, QueuedVote, VoteSink, redis::RedisQueue},
};
use votemesh_testing::{
    PostgresServer, RedisServer, TestServer, probe,
    process::run_health_check,
    services::{ANY_PORT, SERVED_BY, start_vote, start_worker, worker_settings},
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

fn new_vote(voter_id: &str, option_id: &str) -> NewVote {
    NewVote {
        vote_id: uuid::Uuid::new_v4(),
        voter_id: voter_id.into(),
        option_id: option_id.into(),
        cast_at: chrono::Utc::now(),
        trace_context: Default::default(),
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
    assert_eq!(
        (older.option_id.as_str(), newer.option_id.as_str()),
        ("a", "b")
    );
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
    assert!(
        status.message().contains("not queued") && status.message().contains("retrying is safe"),
        "Redis down: nothing was sent, so nothing was queued: {status:?}"
    );
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

/// `votemesh-vote --health-check` against the service on `addr`: what Docker's
/// HEALTHCHECK runs in the image.
async fn binary_health_check(addr: SocketAddr) -> std::process::Output {
    run_health_check(env!("CARGO_BIN_EXE_votemesh-vote"), addr).await
}

#[tokio::test]
async fn the_binary_health_check_follows_readiness() {
    let mut redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let addr = service.addr;
    let healthy = binary_health_check(addr).await;
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(String::from_utf8_lossy(&healthy.stdout).trim(), "healthy");

    redis.stop().await;
    probe::wait_for("readiness NOT_SERVING", WAIT, || async {
        probe::health(addr, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    let unhealthy = binary_health_check(addr).await;
    assert!(!unhealthy.status.success());
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains("NOT_SERVING"),
        "{unhealthy:?}"
    );
    service.stop().await;

    let nothing = binary_health_check(addr).await;
    assert!(!nothing.status.success(), "no server, not healthy");
}

/// Collects every status a health Watch stream on `""` reports, until the
/// returned task is aborted.
async fn watch_readiness(
    addr: SocketAddr,
) -> (Arc<Mutex<Vec<ServingStatus>>>, tokio::task::JoinHandle<()>) {
    let channel = votemesh::client::connect(addr).await.unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(update)) = watch.message().await {
                seen.lock().unwrap().push(update.status());
            }
        })
    };
    (seen, task)
}

#[tokio::test]
async fn a_push_cut_off_mid_call_is_unconfirmed_and_readiness_stays() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = client(&service).await;
    client.cast_vote(cast("v1", "a")).await.unwrap();
    let (readiness, watcher) = watch_readiness(service.addr).await;
    probe::wait_for("the watcher saw SERVING", WAIT, || async {
        readiness.lock().unwrap().contains(&ServingStatus::Serving)
    })
    .await;

    // Redis holds every write (reads such as the probe's PING still
    // answer), so the push is sent and waits; then every client connection
    // is cut, as a network blip or a proxy restart would.
    let paused = redis
        .command(&["CLIENT", "PAUSE", "5000", "WRITE"])
        .await
        .unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    let cast_v2 = {
        let mut client = client.clone();
        tokio::spawn(async move { client.cast_vote(cast("v2", "b")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = redis
        .command(&["CLIENT", "KILL", "TYPE", "normal"])
        .await
        .unwrap();
    assert!(killed.starts_with(':'), "{killed}");
    let status = cast_v2.await.unwrap().unwrap_err();
    redis.command(&["CLIENT", "UNPAUSE"]).await.unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("may or may not have been queued")
            && status.message().contains("retrying is safe"),
        "{status:?}"
    );
    assert!(
        !status.message().contains("not queued"),
        "never claim nothing was queued when the push was sent: {status:?}"
    );
    client.cast_vote(cast("v2", "b")).await.unwrap();

    // One failed call did not take the service out of its Service: the
    // probe's PING kept answering, so readiness never moved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();
    let seen = readiness.lock().unwrap().clone();
    assert!(
        !seen.contains(&ServingStatus::NotServing),
        "readiness follows the probe, not one request: {seen:?}"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_push_that_times_out_after_it_was_sent_may_still_queue_the_vote() {
    let redis = RedisServer::start().await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();
    queue.push(&new_vote("v1", "a")).await.unwrap();
    // Writes are held for longer than the client waits for an answer
    // (500 ms), then run.
    let paused = redis
        .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .await
        .unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    let error = queue.push(&new_vote("v2", "b")).await.unwrap_err();
    assert!(matches!(error, QueueError::Unconfirmed(_)), "{error:?}");
    let status = votemesh_vote::server::status_of(&votemesh_vote::ballot::VoteError::Queue(error));
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("may or may not have been queued"),
        "{status:?}"
    );
    // And it was queued after all: the answer the client gave up on was OK.
    probe::wait_for("the unanswered vote queued", WAIT, || async {
        queued(&redis)
            .await
            .iter()
            .any(|vote| vote.voter_id == "v2")
    })
    .await;
}

/// Redis' `used_memory`, in bytes.
async fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "memory"]).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in {info}"))
}

/// The votes table: voter id -> option id.
async fn stored_votes(db: &sea_orm::DatabaseConnection) -> BTreeMap<String, String> {
    use sea_orm::EntityTrait;
    votemesh::store::entity::vote::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.voter_id, row.option_id))
        .collect()
}

/// The tally table, without zero rows.
async fn stored_tally(db: &sea_orm::DatabaseConnection) -> BTreeMap<String, i64> {
    use sea_orm::EntityTrait;
    votemesh::store::entity::tally::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|row| row.count != 0)
        .map(|row| (row.option_id, row.count))
        .collect()
}

/// Headroom above Redis' memory at the start: room for a thousand or so
/// queued votes, and for the client buffers of the worker that drains
/// them (Redis counts those in its memory too).
const HEADROOM: u64 = 1024 * 1024;

#[tokio::test]
async fn redis_full_refuses_votes_with_resource_exhausted_loses_none_and_takes_them_again_once_drained()
 {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = votemesh::store::connect(&postgres.url()).await.unwrap();
    votemesh::store::migrate(&db).await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = client(&service).await;
    let limit = used_memory(&redis).await + HEADROOM;
    for words in [
        ["CONFIG", "SET", "maxmemory-policy", "noeviction"],
        ["CONFIG", "SET", "maxmemory", &limit.to_string()],
    ] {
        let reply = redis.command(&words).await.unwrap();
        assert!(reply.starts_with("+OK"), "{words:?}: {reply}");
    }

    // Cast until Redis is full.
    let mut acknowledged = BTreeMap::<String, String>::new();
    let refused = loop {
        let voter = format!("voter-{}", acknowledged.len());
        let option = if acknowledged.len().is_multiple_of(3) {
            "b"
        } else {
            "a"
        };
        match client.cast_vote(cast(&voter, option)).await {
            Ok(_) => {
                acknowledged.insert(voter, option.to_owned());
                assert!(acknowledged.len() < 50_000, "Redis never filled up");
            }
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("queue is full") && refused.message().contains("retry later"),
        "{refused:?}"
    );
    assert!(acknowledged.len() > 100, "{} votes fit", acknowledged.len());
    println!(
        "maxmemory {limit} bytes (start + {HEADROOM}): {} votes acknowledged, then RESOURCE_EXHAUSTED",
        acknowledged.len()
    );
    // Still full for the next voter, and the service stays ready: it
    // answers, and the refusal is the answer.
    let again = client.cast_vote(cast("late-voter", "a")).await.unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted);
    assert_eq!(
        probe::health(service.addr, "").await,
        Ok(ServingStatus::Serving)
    );

    // A worker drains the full queue (its moves still work at maxmemory).
    let mut expected = BTreeMap::<String, i64>::new();
    for option in acknowledged.values() {
        *expected.entry(option.clone()).or_default() += 1;
    }
    let worker = start_worker(&redis, &postgres, worker_settings("drain-full")).await;
    probe::wait_for(&format!("tally {expected:?}"), WAIT, || async {
        stored_tally(&db).await == expected
    })
    .await;
    assert_eq!(
        stored_votes(&db).await,
        acknowledged,
        "every acknowledged vote counted once; no refused vote counted"
    );
    probe::wait_for("queue and processing lists empty", WAIT, || async {
        redis
            .command(&["LLEN", QUEUE_KEY])
            .await
            .unwrap()
            .starts_with(":0")
            && redis
                .command(&["KEYS", "votes:processing:*"])
                .await
                .unwrap()
                .starts_with("*0")
    })
    .await;

    // Drained: votes are taken again, with no restart.
    client.cast_vote(cast("late-voter", "b")).await.unwrap();
    *expected.entry("b".into()).or_default() += 1;
    probe::wait_for("the late vote counted", WAIT, || async {
        stored_tally(&db).await == expected
    })
    .await;
    let voters: BTreeSet<String> = stored_votes(&db).await.into_keys().collect();
    assert_eq!(voters.len(), acknowledged.len() + 1);
    worker.stop().await;
    service.stop().await;
}
