//! The worker binary over TLS to both stores, against a real redis-server
//! listening with TLS and a real PostgreSQL that admits TLS connections
//! only, with certificates made in the test: it drains `rediss://` into
//! PostgreSQL with `sslmode=verify-full` (the CA taken from `TLS_CA_FILE`),
//! and a PostgreSQL whose certificate comes from another CA is refused.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tokio::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    config::ConnectionUrl,
    queue::{NewVote, VoteSink, redis::RedisQueue},
    store,
    tls::Tls,
};
use votemesh_testing::{
    PostgresServer, RedisServer, free_port, probe,
    process::output_until,
    redis::ClientAuth,
    tls::{MountedIdentity, TestCa},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);
/// Names of the stores' certificates: the host of their URLs.
const STORE_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// What the worker logs while the database does not answer.
const DB_FAILED: &str = "cannot migrate the database yet";

fn new_vote(voter: &str, option: &str) -> NewVote {
    NewVote {
        vote_id: uuid::Uuid::new_v4(),
        voter_id: voter.into(),
        option_id: option.into(),
        cast_at: chrono::Utc::now(),
        trace_context: Default::default(),
        idempotency: None,
    }
}

/// The worker binary's command: its gRPC on a free port, the plaintext
/// health listener on another, the identity in `identity`.
async fn worker_command(
    redis_url: &ConnectionUrl,
    database_url: &ConnectionUrl,
    identity: &MountedIdentity,
) -> (Command, SocketAddr) {
    let health: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let mut command = Command::new(env!("CARGO_BIN_EXE_votemesh-worker"));
    command
        .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("HEALTH_LISTEN_ADDR", health.to_string())
        .env("REDIS_URL", redis_url.expose())
        .env("DATABASE_URL", database_url.expose())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(identity.env())
        .kill_on_drop(true);
    (command, health)
}

#[tokio::test]
async fn the_worker_binary_drains_rediss_into_postgres_over_verify_full() {
    let ca = TestCa::new("votemesh test CA");
    let redis = RedisServer::start_tls(&ca.issue(&STORE_NAMES), &ca.cert_pem, ClientAuth::Required)
        .await
        .unwrap();
    let postgres = PostgresServer::start_tls(&ca.issue(&STORE_NAMES))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker_identity = MountedIdentity::write(
        &dir.path().join("worker"),
        &ca.issue(&["worker"]),
        &ca.cert_pem,
    );
    let vote_identity =
        MountedIdentity::write(&dir.path().join("vote"), &ca.issue(&["vote"]), &ca.cert_pem);
    let ca_file = worker_identity.files().ca;

    // The server admits TLS only: a plaintext connection is refused, a
    // verified one gets in.
    let plaintext = ConnectionUrl::new(format!("{}?sslmode=disable", postgres.url().expose()));
    let refused = store::ping(&store::connect(&plaintext).await.unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no encryption"), "{refused}");
    let db = store::connect(&postgres.verify_full_url(&ca_file))
        .await
        .unwrap();
    store::ping(&db).await.unwrap();

    // sslmode=verify-full without sslrootcert: the CA comes from TLS_CA_FILE.
    let database_url =
        ConnectionUrl::new(format!("{}?sslmode=verify-full", postgres.url().expose()));
    let (mut command, health) =
        worker_command(&redis.tls_url(), &database_url, &worker_identity).await;
    let _worker = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("worker ready over TLS to both stores", WAIT, || async {
        probe::health(health, "").await == Ok(ServingStatus::Serving)
    })
    .await;

    let queue = RedisQueue::with_tls(
        &redis.tls_url(),
        Some(Tls::load(vote_identity.files()).unwrap()),
    )
    .unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..25 {
        let option = if i % 5 == 0 { "b" } else { "a" };
        queue
            .push(&new_vote(&format!("voter-{i}"), option))
            .await
            .unwrap_or_else(|error| panic!("vote {i} over rediss: {error}"));
        *expected.entry(option.to_owned()).or_insert(0_i64) += 1;
    }
    wait_for("the tally has every vote, once", WAIT, || async {
        votemesh_testing::stored_tally(&db)
            .await
            .unwrap_or_default()
            == expected
    })
    .await;
    assert_eq!(
        expected,
        BTreeMap::from([("a".into(), 20), ("b".into(), 5)])
    );
}

#[tokio::test]
async fn a_postgres_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("votemesh test CA");
    let other_ca = TestCa::new("someone else's CA");
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start_tls(&other_ca.issue(&STORE_NAMES))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let identity = MountedIdentity::write(
        &dir.path().join("worker"),
        &ca.issue(&["worker"]),
        &ca.cert_pem,
    );
    let database_url = postgres.verify_full_url(&identity.files().ca);

    let refused = store::ping(&store::connect(&database_url).await.unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");

    let (command, _) = worker_command(&redis.url(), &database_url, &identity).await;
    let (_, output) = output_until(command, DB_FAILED).await;
    let failure = output
        .lines()
        .find(|line| line.contains(DB_FAILED))
        .unwrap_or_else(|| panic!("no database failure logged:\n{output}"));
    assert!(
        failure.contains("invalid peer certificate: UnknownIssuer"),
        "{failure}"
    );
}
