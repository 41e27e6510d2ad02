//! The whole data path, CastVote to GetResults/WatchResults, through real
//! gRPC clients: once on real Redis and PostgreSQL servers, once embedded
//! (in-process queue, SQLite) with no server at all.

use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::PollArgs,
    proto::v1::{CastVoteRequest, GetResultsRequest, Tally, WatchResultsRequest},
};
use votemesh_standalone::Backends;
use votemesh_testing::{PostgresServer, RedisServer, probe};

mod support;

use support::{System, WAIT};

fn cats_dogs_birds() -> votemesh::poll::Poll {
    PollArgs {
        extra_options: vec!["c=Birds".into()],
        ..PollArgs::default()
    }
    .poll()
    .unwrap()
}

fn summary(tally: &Tally) -> Vec<(String, String, i64)> {
    tally
        .options
        .iter()
        .map(|o| (o.id.clone(), o.label.clone(), o.count))
        .collect()
}

fn expected(a: i64, b: i64, c: i64) -> Vec<(String, String, i64)> {
    vec![
        ("a".into(), "Cats".into(), a),
        ("b".into(), "Dogs".into(), b),
        ("c".into(), "Birds".into(), c),
    ]
}

/// The flow every deployment must get right.
async fn votes_are_counted_exactly_and_watchers_see_them(system: &System) {
    let mut votes = system.vote_client().await;
    let mut results = system.result_client().await;

    let empty = results
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary(&empty), expected(0, 0, 0));
    assert_eq!(empty.total, 0);

    let mut watch = results
        .watch_results(WatchResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        first.total, 0,
        "a new watcher gets the current tally at once"
    );

    // 60 voters: 30 for a, 20 for b, 10 for c; then voter 0 changes to b
    // twice over (a -> c -> b): counted once, for the last option.
    for voter in 0..60 {
        let option = match voter {
            0..30 => "a",
            30..50 => "b",
            _ => "c",
        };
        votes
            .cast_vote(CastVoteRequest {
                voter_id: format!("voter-{voter}"),
                option: option.into(),
            })
            .await
            .unwrap();
    }
    for option in ["c", "b"] {
        votes
            .cast_vote(CastVoteRequest {
                voter_id: "voter-0".into(),
                option: option.into(),
            })
            .await
            .unwrap();
    }

    let mut latest = first;
    while latest.total != 60 || summary(&latest) != expected(29, 21, 10) {
        latest = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("WatchResults delivers the drained tally")
            .unwrap()
            .expect("the stream stays open");
    }
    let tally = results
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary(&tally), expected(29, 21, 10));
    assert_eq!(tally.total, 60);
}

#[tokio::test]
async fn the_full_path_on_real_redis_and_postgres() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let backends = Backends {
        redis: Some(redis.url()),
        database: postgres.url(),
    };
    let system = System::start(backends, cats_dogs_birds()).await;
    votes_are_counted_exactly_and_watchers_see_them(&system).await;

    for (addr, service) in [
        (system.addrs.vote, votemesh_vote::SERVICE_NAME),
        (system.addrs.worker, votemesh_worker::SERVICE_NAME),
        (system.addrs.result, votemesh_result::SERVICE_NAME),
    ] {
        let listed = probe::reflected_services(addr, probe::Reflection::V1)
            .await
            .unwrap();
        assert!(
            listed.iter().any(|name| name == service),
            "{addr} lists {service}: {listed:?}"
        );
        assert_eq!(
            probe::health(addr, service).await,
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            probe::health(addr, "liveness").await,
            Ok(ServingStatus::Serving)
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn the_full_path_embedded_with_no_server_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_dogs_birds()).await;
    votes_are_counted_exactly_and_watchers_see_them(&system).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_shutdown_counts_every_acknowledged_vote() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_dogs_birds()).await;
    // A burst of votes, then at once a shutdown: the in-process queue still
    // holds some of them, and they must not die with the process.
    // Six clients (connections), fifty calls in flight on each.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(system.vote_client().await);
    }
    let casts: Vec<_> = (0..300)
        .map(|voter| {
            let mut client = clients[voter % clients.len()].clone();
            tokio::spawn(async move {
                let request = CastVoteRequest {
                    voter_id: format!("burst-{voter}"),
                    option: "b".into(),
                };
                client.cast_vote(request).await.map(|_| ())
            })
        })
        .collect();
    let mut acknowledged = 0;
    let mut refused = Vec::new();
    for cast in casts {
        match cast.await.unwrap() {
            Ok(()) => acknowledged += 1,
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(acknowledged, 300, "refused: {refused:?}");
    system.stop().await;

    let restarted = System::embedded(dir.path(), cats_dogs_birds()).await;
    let tally = restarted
        .result_client()
        .await
        .get_results(GetResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tally.total, acknowledged,
        "every acknowledged vote was counted before the stop"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_dogs_birds()).await;
    let mut watch = system
        .result_client()
        .await
        .watch_results(WatchResultsRequest {})
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    system.stop().await;
    assert!(
        matches!(watch.message().await, Ok(None) | Err(_)),
        "the stream ended"
    );
}
