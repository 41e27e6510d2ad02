//! The vote service binary over Redis with TLS (`rediss://`), against a
//! real redis-server listening with TLS and certificates made in the test:
//! votes go through and are drained by a worker over TLS too, a Redis
//! whose certificate comes from another CA is refused, and a plaintext
//! `redis://` URL against the TLS port fails clearly.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tokio::process::{Child, Command};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    client,
    config::ConnectionUrl,
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::redis::RedisQueue,
    store,
    tls::Tls,
};
use votemesh_testing::{
    ANY_PORT, PostgresServer, RedisServer, TestServer, free_port, probe,
    process::output_until,
    redis::ClientAuth,
    tls::{MountedIdentity, TestCa},
    wait_for,
};
use votemesh_testing_services::worker_settings;

const WAIT: Duration = Duration::from_secs(30);
/// Names of Redis' certificate: the host of its `rediss://` URL.
const REDIS_NAMES: [&str; 2] = ["redis", "127.0.0.1"];

/// The vote binary with mutual TLS, its queue on `redis_url`.
struct VoteProcess {
    child: Child,
    addr: SocketAddr,
    health: SocketAddr,
}

async fn vote_command(
    redis_url: &ConnectionUrl,
    identity: &MountedIdentity,
) -> (Command, SocketAddr, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let health: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let mut command = Command::new(env!("CARGO_BIN_EXE_votemesh-vote"));
    command
        .env("VOTE_LISTEN_ADDR", addr.to_string())
        .env("HEALTH_LISTEN_ADDR", health.to_string())
        .env("REDIS_URL", redis_url.expose())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(identity.env())
        .kill_on_drop(true);
    (command, addr, health)
}

async fn start_vote(redis_url: &ConnectionUrl, identity: &MountedIdentity) -> VoteProcess {
    let (mut command, addr, health) = vote_command(redis_url, identity).await;
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    VoteProcess {
        child,
        addr,
        health,
    }
}

fn cast(voter_id: &str, option: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: option.into(),
    }
}

async fn cast_with(
    addr: SocketAddr,
    tls: &Tls,
    request: CastVoteRequest,
) -> Result<(), tonic::Status> {
    let channel = client::connect_tls(addr, tls.clone(), "vote")
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    VoteServiceClient::new(channel).cast_vote(request).await?;
    Ok(())
}

/// The vote service's identity and a gateway identity that calls it.
struct Identities {
    _dir: tempfile::TempDir,
    vote: MountedIdentity,
    worker: MountedIdentity,
    gateway: Tls,
}

fn identities(ca: &TestCa) -> Identities {
    let dir = tempfile::tempdir().unwrap();
    let mount = |name: &str, names: &[&str]| {
        MountedIdentity::write(&dir.path().join(name), &ca.issue(names), &ca.cert_pem)
    };
    let vote = mount("vote", &["vote", "127.0.0.1"]);
    let worker = mount("worker", &["worker"]);
    let gateway = Tls::load(mount("gateway", &["gateway"]).files()).unwrap();
    Identities {
        _dir: dir,
        vote,
        worker,
        gateway,
    }
}

#[tokio::test]
async fn votes_cast_over_rediss_are_drained_into_postgres_with_exact_counts() {
    let ca = TestCa::new("votemesh test CA");
    // Redis asks for a client certificate from the CA: the vote service's
    // pusher and pool, and the worker's pool, must present theirs.
    let redis = RedisServer::start_tls(&ca.issue(&REDIS_NAMES), &ca.cert_pem, ClientAuth::Required)
        .await
        .unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let ids = identities(&ca);
    let vote = start_vote(&redis.tls_url(), &ids.vote).await;
    wait_for("vote ready over rediss", WAIT, || async {
        probe::health(vote.health, "").await == Ok(ServingStatus::Serving)
    })
    .await;

    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let worker_tls = Tls::load(ids.worker.files()).unwrap();
    let source = RedisQueue::with_tls(&redis.tls_url(), Some(worker_tls))
        .unwrap()
        .for_worker("tls-worker");
    let worker_db = db.clone();
    let _worker = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_worker::run(
            listener,
            source,
            worker_db,
            worker_settings("tls-worker"),
            shutdown,
        )
    })
    .await;

    let mut expected = BTreeMap::new();
    for i in 0..30 {
        let option = if i % 3 == 0 { "b" } else { "a" };
        cast_with(vote.addr, &ids.gateway, cast(&format!("voter-{i}"), option))
            .await
            .unwrap_or_else(|status| panic!("vote {i} over rediss: {status:?}"));
        *expected.entry(option.to_owned()).or_insert(0_i64) += 1;
    }
    wait_for("the tally has every vote, once", WAIT, || async {
        votemesh_testing::stored_tally(&db).await.unwrap() == expected
    })
    .await;
    assert_eq!(
        expected,
        BTreeMap::from([("a".into(), 20), ("b".into(), 10)])
    );
    drop(vote.child);
}

#[tokio::test]
async fn a_redis_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("votemesh test CA");
    let other_ca = TestCa::new("someone else's CA");
    let redis = RedisServer::start_tls(
        &other_ca.issue(&REDIS_NAMES),
        &other_ca.cert_pem,
        ClientAuth::None,
    )
    .await
    .unwrap();
    let ids = identities(&ca);
    let (command, _, _) = vote_command(&redis.tls_url(), &ids.vote).await;
    // The readiness probe's failure is logged, naming the certificate.
    let (_, output) = output_until(command, "UnknownIssuer").await;
    assert!(output.contains("UnknownIssuer"), "{output}");
    assert!(output.contains("invalid peer certificate"), "{output}");

    let vote = start_vote(&redis.tls_url(), &ids.vote).await;
    wait_for("vote listening", WAIT, || async {
        probe::health(vote.health, "liveness").await == Ok(ServingStatus::Serving)
    })
    .await;
    wait_for("vote reports NOT_SERVING", WAIT, || async {
        probe::health(vote.health, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    let refused = cast_with(vote.addr, &ids.gateway, cast("voter", "a"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Nothing reached the queue.
    assert_eq!(redis.command(&["LLEN", "votes"]).await.unwrap(), ":0\r\n");
}

#[tokio::test]
async fn a_plaintext_url_against_the_tls_port_fails_clearly() {
    let ca = TestCa::new("votemesh test CA");
    let redis = RedisServer::start_tls(&ca.issue(&REDIS_NAMES), &ca.cert_pem, ClientAuth::None)
        .await
        .unwrap();
    let ids = identities(&ca);
    let plaintext = ConnectionUrl::new(format!("redis://127.0.0.1:{}/", redis.tls_port().unwrap()));
    let (command, _, _) = vote_command(&plaintext, &ids.vote).await;
    let (_, output) = output_until(command, "rediss://").await;
    assert!(
        output.contains("if this Redis requires TLS, use a rediss:// URL"),
        "{output}"
    );

    let vote = start_vote(&plaintext, &ids.vote).await;
    wait_for("vote listening", WAIT, || async {
        probe::health(vote.health, "liveness").await == Ok(ServingStatus::Serving)
    })
    .await;
    wait_for("vote reports NOT_SERVING", WAIT, || async {
        probe::health(vote.health, "").await == Ok(ServingStatus::NotServing)
    })
    .await;
    let refused = cast_with(vote.addr, &ids.gateway, cast("voter", "a"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(redis.command(&["LLEN", "votes"]).await.unwrap(), ":0\r\n");
}
