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
    ANY_PORT, PostgresServer, RedisServer, TestServer, probe, process::run_health_check,
};
use votemesh_testing_services::{SERVED_BY, start_vote, start_worker, worker_settings};

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
        idempotency: None,
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
    // The push is held in Redis (a paused write counts as blocked).
    redis.wait_for_blocked_clients(1).await.unwrap();
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

/// A Redis host that accepts connections and never answers (gone behind a
/// firewall that drops packets, not a refused port): every vote hears
/// UNAVAILABLE within about one connection attempt (the client's 1 s
/// connection timeout), however many arrive while attempts wait, and never
/// runs into its caller's deadline.
#[tokio::test]
async fn a_redis_that_never_answers_costs_a_vote_one_connection_attempt_not_its_deadline() {
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = votemesh::config::ConnectionUrl::new(format!(
        "redis://{}/",
        blackhole.local_addr().unwrap()
    ));
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            sockets.push(socket);
        }
    });
    let queue = RedisQueue::new(&url).unwrap();
    // Not waited ready: readiness is NOT_SERVING, CastVote is still served.
    let service = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            queue,
            votemesh_testing_services::cats_and_dogs(),
            SERVED_BY.to_owned(),
            Duration::from_millis(100),
            shutdown,
        )
    })
    .await;
    let client = client(&service).await;

    // 16 callers vote in a closed loop for 3.5 s, each call with a 1.8 s
    // deadline, each pausing a different time before each call.
    const DEADLINE: Duration = Duration::from_millis(1800);
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    let callers: Vec<_> = (0..16)
        .map(|caller| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while tokio::time::Instant::now() < until {
                    // Staggered, so votes keep arriving while an attempt waits.
                    tokio::time::sleep(Duration::from_millis(60 * caller)).await;
                    let mut request = tonic::Request::new(cast(&format!("v{caller}-{n}"), "a"));
                    request.set_timeout(DEADLINE);
                    let started = tokio::time::Instant::now();
                    let outcome = client.cast_vote(request).await;
                    outcomes.push((outcome.map(|_| ()), started.elapsed()));
                    n += 1;
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.await.unwrap());
    }
    held.abort();
    assert!(outcomes.len() >= 16, "{outcomes:?}");
    for (outcome, took) in &outcomes {
        let status = outcome.as_ref().expect_err("nothing can be queued");
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "after {took:?}: {status:?} (a vote waited through more than one attempt)"
        );
        assert!(status.message().contains("not queued"), "{status:?}");
    }
    service.stop().await;
}

/// A vote whose caller gave up while it waited for the pusher (all of
/// whose calls were on the wire) is dropped, not pushed after the fact.
#[tokio::test]
async fn a_vote_whose_caller_left_while_it_waited_is_not_pushed() {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let client = client(&service).await;
    client.clone().cast_vote(cast("warm", "a")).await.unwrap();

    // Writes held for 1.5 s: the pusher's 4 script calls wait on the wire
    // until the client's 500 ms response timeout.
    let paused = redis
        .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .await
        .unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    let spawn_vote = |voter: String, deadline: Duration| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut request = tonic::Request::new(cast(&voter, "a"));
            request.set_timeout(deadline);
            client.cast_vote(request).await
        })
    };
    let mut on_the_wire = Vec::new();
    for n in 0..4 {
        on_the_wire.push(spawn_vote(format!("wire-{n}"), Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // These wait behind them, and their callers leave after 100 ms.
    let mut left = Vec::new();
    for n in 0..10 {
        left.push(spawn_vote(format!("left-{n}"), Duration::from_millis(100)));
    }
    for call in left {
        let status = call.await.unwrap().unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    for call in on_the_wire {
        let _ = call.await.unwrap();
    }
    // Once Redis takes writes again, a new vote goes through; none of the
    // abandoned ones was pushed.
    probe::wait_for("a vote after the pause", WAIT, || async {
        client.clone().cast_vote(cast("after", "b")).await.is_ok()
    })
    .await;
    let voters: BTreeSet<String> = queued(&redis)
        .await
        .into_iter()
        .map(|vote| vote.voter_id)
        .collect();
    assert!(voters.contains("after"), "{voters:?}");
    assert!(
        !voters.iter().any(|voter| voter.starts_with("left-")),
        "votes whose callers had left were pushed: {voters:?}"
    );
    let scrape = votemesh_testing::metrics::scrape(service.addr)
        .await
        .unwrap();
    let abandoned =
        votemesh_testing::metrics::value(&scrape, "votemesh_vote_push_abandoned_total", &[]);
    assert!(abandoned >= 10.0, "abandoned {abandoned}");
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
    let status = votemesh_vote::server::status_of(&votemesh_vote::intake::VoteError::Queue(error));
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
    votemesh_testing::stored_tally(db).await.unwrap()
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
