//! The order of a voter's votes without per-voter state in Redis, against
//! real redis-server and PostgreSQL: the vote Redis accepted last wins,
//! across two vote service replicas, across a Redis restart that lost
//! everything and across one that came back from its append-only file,
//! and a drained queue leaves nothing per voter in Redis.

use std::{collections::BTreeMap, time::Duration};

use tonic::Code;
use votemesh::{
    idempotency::MAX_REPEAT_WINDOW,
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::{
        CLOCK_KEY, HEARTBEAT_KEY_PREFIX, MARKER_BUCKET_PREFIX, REQUEST_KEY_PREFIX, VoteSink,
        redis::RedisQueue, shard::LAYOUT_KEY,
    },
    store,
};
use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, TestServer, probe};
use votemesh_testing_services::{start_vote_named, start_worker, worker_settings};

const WAIT: Duration = Duration::from_secs(30);
const VOTERS: usize = 40;

type Client = VoteServiceClient<tonic::transport::Channel>;

async fn client(service: &TestServer) -> Client {
    VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap())
}

/// Casts a vote, retrying while the service answers UNAVAILABLE (Redis is
/// coming back); returns once it was acknowledged.
async fn cast(client: &mut Client, voter_id: &str, option: &str) {
    probe::wait_for(
        &format!("{voter_id} -> {option} acknowledged"),
        WAIT,
        || {
            let mut client = client.clone();
            async move {
                let request = CastVoteRequest {
                    voter_id: voter_id.into(),
                    option: option.into(),
                };
                match client.cast_vote(request).await {
                    Ok(_) => true,
                    Err(status) if status.code() == Code::Unavailable => false,
                    Err(status) => panic!("CastVote refused {voter_id}: {status:?}"),
                }
            }
        },
    )
    .await;
}

async fn wait_for_tally(
    db: &sea_orm::DatabaseConnection,
    expected: &BTreeMap<String, i64>,
    when: &str,
) {
    probe::wait_for(&format!("tally {expected:?} {when}"), WAIT, || async {
        &votemesh_testing::stored_tally(db).await.unwrap() == expected
    })
    .await;
}

#[tokio::test]
async fn the_vote_redis_accepted_last_wins_across_two_replicas_and_a_redis_restart() {
    let mut redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let one = start_vote_named(&redis, ANY_PORT, "vote-1").await;
    let two = start_vote_named(&redis, ANY_PORT, "vote-2").await;
    let (mut via_one, mut via_two) = (client(&one).await, client(&two).await);
    let first = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let second = start_worker(&redis, &postgres, worker_settings("w2")).await;

    // Every voter votes b, a, b, a through alternating replicas while two
    // workers drain: each voter's last vote is "a".
    for round in 0..4 {
        let option = if round % 2 == 0 { "b" } else { "a" };
        for voter in 0..VOTERS {
            let replica = if (voter + round) % 2 == 0 {
                &mut via_one
            } else {
                &mut via_two
            };
            cast(replica, &format!("voter-{voter}"), option).await;
        }
    }
    let all_a = BTreeMap::from([("a".to_owned(), VOTERS as i64)]);
    wait_for_tally(&db, &all_a, "before the restart").await;

    // Redis restarts without persistence: the queue's clock key is gone.
    // Votes accepted afterwards are still later than every stored one.
    redis.restart().await.unwrap();
    for voter in 0..VOTERS {
        let replica = if voter % 2 == 0 {
            &mut via_two
        } else {
            &mut via_one
        };
        cast(replica, &format!("voter-{voter}"), "b").await;
    }
    let all_b = BTreeMap::from([("b".to_owned(), VOTERS as i64)]);
    wait_for_tally(&db, &all_b, "after the restart").await;

    first.stop().await;
    second.stop().await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn with_its_aof_a_restarted_redis_keeps_the_queue_and_the_clock_so_the_later_vote_wins() {
    let mut redis = RedisServer::start_with_aof().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let vote = start_vote_named(&redis, ANY_PORT, "vote-1").await;
    let mut client = client(&vote).await;

    // The queue's clock runs an hour ahead of the Redis host's (a host
    // whose clock was later stepped back): after the restart, only the
    // clock kept in the AOF orders a vote behind the one stored before.
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    redis
        .command(&["SET", CLOCK_KEY, &ahead.to_string()])
        .await
        .unwrap();
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    cast(&mut client, "voter-stored", "b").await;
    wait_for_tally(
        &db,
        &BTreeMap::from([("b".to_owned(), 1)]),
        "before the restart",
    )
    .await;
    worker.stop().await;
    // A vote still queued when Redis goes down.
    cast(&mut client, "voter-queued", "a").await;

    // Killed, not shut down: only what the AOF holds comes back.
    redis.restart().await.unwrap();
    cast(&mut client, "voter-stored", "a").await;

    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let expected = BTreeMap::from([("a".to_owned(), 2)]);
    wait_for_tally(&db, &expected, "after the AOF restart").await;
    worker.stop().await;
    vote.stop().await;
}

#[tokio::test]
async fn concurrent_votes_share_script_calls_and_a_drained_queue_leaves_nothing_per_voter() {
    const DISTINCT_VOTERS: usize = 2_000;
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let queue = RedisQueue::new(&redis.url()).unwrap();

    let mut pushes = tokio::task::JoinSet::new();
    for voter in 0..DISTINCT_VOTERS {
        let queue = queue.clone();
        pushes.spawn(async move {
            let vote = votemesh::queue::NewVote {
                vote_id: uuid::Uuid::new_v4(),
                voter_id: format!("voter-{voter}"),
                option_id: "a".into(),
                cast_at: chrono::Utc::now(),
                trace_context: Default::default(),
                idempotency: None,
            };
            queue.push(&vote).await.unwrap().sequence
        });
    }
    let mut sequences = std::collections::BTreeSet::new();
    while let Some(pushed) = pushes.join_next().await {
        sequences.insert(pushed.unwrap());
    }
    assert_eq!(
        sequences.len(),
        DISTINCT_VOTERS,
        "every vote its own sequence"
    );
    // Votes that arrived together shared script calls (round trips).
    let stats = redis.command(&["INFO", "commandstats"]).await.unwrap();
    let script_calls: u64 = stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        (1..=DISTINCT_VOTERS as u64 / 10).contains(&script_calls),
        "{DISTINCT_VOTERS} concurrent votes took {script_calls} script calls"
    );
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let expected = BTreeMap::from([("a".to_owned(), DISTINCT_VOTERS as i64)]);
    wait_for_tally(&db, &expected, "once drained").await;

    // What is left: the queue's one clock, its layout (its shard count)
    // and the worker's heartbeat, not
    // a key, field or list entry per voter that stays; a call's
    // idempotency marker lives only for its repeat window.
    let reply = redis.command(&["KEYS", "*"]).await.unwrap();
    let keys: Vec<&str> = reply
        .lines()
        .filter(|line| !line.starts_with('*') && !line.starts_with('$'))
        .collect();
    for key in &keys {
        if key.starts_with(REQUEST_KEY_PREFIX) || key.starts_with(MARKER_BUCKET_PREFIX) {
            let ttl = redis.command(&["PTTL", key]).await.unwrap();
            let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
            assert!(
                (1..=MAX_REPEAT_WINDOW.as_millis() as i64).contains(&ttl),
                "{key} expires within the repeat window: {ttl} ms"
            );
        } else {
            assert!(
                *key == CLOCK_KEY || *key == LAYOUT_KEY || key.starts_with(HEARTBEAT_KEY_PREFIX),
                "only the clock, the layout, heartbeats and expiring markers remain: {keys:?}"
            );
        }
    }
    let clock_type = redis.command(&["TYPE", CLOCK_KEY]).await.unwrap();
    assert_eq!(clock_type.trim(), "+string", "the clock is one number");
    worker.stop().await;
}

#[tokio::test]
async fn votes_queued_by_the_previous_release_drain_and_a_newer_vote_wins() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();

    // As the previous release's script left it: the per-voter hash, and a
    // message stamped by it a second ago (earlier still: named `option`).
    let a_second_ago = chrono::Utc::now().timestamp_micros() - 1_000_000;
    let stamp = a_second_ago.to_string();
    for voter in ["legacy-1", "legacy-2"] {
        let old = format!(
            r#"{{"sequence":{a_second_ago},"vote_id":"{}","voter_id":"{voter}","option":"a","cast_at":"2026-11-27T10:00:00Z","trace_context":{{}}}}"#,
            uuid::Uuid::new_v4()
        );
        redis
            .command(&["HSET", "votes:voter-sequence", voter, &stamp])
            .await
            .unwrap();
        redis
            .command(&["LPUSH", votemesh::queue::QUEUE_KEY, &old])
            .await
            .unwrap();
    }
    let queue = RedisQueue::new(&redis.url()).unwrap();
    let newer = votemesh::queue::NewVote {
        vote_id: uuid::Uuid::new_v4(),
        voter_id: "legacy-2".into(),
        option_id: "b".into(),
        cast_at: chrono::Utc::now(),
        trace_context: Default::default(),
        idempotency: None,
    };
    let queued = queue.push(&newer).await.unwrap();
    assert!(queued.sequence > a_second_ago);

    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    // legacy-1's old vote counts; legacy-2's newer vote replaces theirs.
    let expected = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)]);
    wait_for_tally(&db, &expected, "once both drained").await;
    worker.stop().await;
}
