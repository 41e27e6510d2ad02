//! The vote service binary with mutual TLS, over a real redis-server and
//! certificates made in the test: who gets in, who may vote, what the
//! kubelet's plaintext probe sees, `--health-check` over mTLS, and a
//! certificate rotation under steady load.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::process::{Child, Command};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};
use votemesh::{
    client,
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    tls::Tls,
};
use votemesh_testing::process::signal;
use votemesh_testing::{
    RedisServer, free_port, metrics, probe,
    tls::{MountedIdentity, TestCa, der_of, server_certificate},
    wait_for,
};

const WAIT: Duration = Duration::from_secs(30);
const GATEWAY: &str = "spiffe://votemesh/gateway";
const ALLOWED: &str = "spiffe://votemesh/gateway,spiffe://votemesh/operator";
/// The names of the vote service's certificate; clients ask for `vote`.
const VOTE_NAMES: [&str; 2] = ["vote", "127.0.0.1"];

/// The vote binary running with mutual TLS.
struct VoteProcess {
    _child: Child,
    addr: SocketAddr,
    health: SocketAddr,
}

async fn start_vote(redis: &RedisServer, identity: &MountedIdentity) -> VoteProcess {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let health: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let child = Command::new(env!("CARGO_BIN_EXE_votemesh-vote"))
        .env("VOTE_LISTEN_ADDR", addr.to_string())
        .env("HEALTH_LISTEN_ADDR", health.to_string())
        .env("REDIS_URL", redis.url().expose())
        .env("TLS_ALLOWED_CLIENTS", ALLOWED)
        .env("RUST_LOG", "warn")
        .envs(identity.env())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The kubelet's probe: plaintext gRPC health on the health listener.
    wait_for("vote ready on its health listener", WAIT, || async {
        probe::health(health, "").await == Ok(ServingStatus::Serving)
    })
    .await;
    VoteProcess {
        _child: child,
        addr,
        health,
    }
}

/// A client identity `names`, issued by `ca`, trusting `ca_pem`, in `dir`.
fn client_tls(dir: &Path, ca: &TestCa, names: &[&str], trust: &str) -> Tls {
    let mounted = MountedIdentity::write(dir, &ca.issue(names), trust);
    Tls::load(mounted.files()).unwrap()
}

fn cast(voter_id: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: "a".into(),
    }
}

/// CastVote over a new mutual TLS connection with `tls`.
async fn cast_with(addr: SocketAddr, tls: &Tls, voter_id: &str) -> Result<(), tonic::Status> {
    let channel = client::connect_tls(addr, tls.clone(), "vote")
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    VoteServiceClient::new(channel)
        .cast_vote(cast(voter_id))
        .await?;
    Ok(())
}

/// Readiness asked over a new mutual TLS connection with `tls`.
async fn health_with(addr: SocketAddr, tls: &Tls) -> Result<ServingStatus, tonic::Status> {
    let channel = client::connect_tls(addr, tls.clone(), "vote")
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn only_certificates_from_the_ca_get_in_and_only_allowed_identities_vote() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let vote_identity = MountedIdentity::write(
        &dir.path().join("vote"),
        &ca.issue(&VOTE_NAMES),
        &ca.cert_pem,
    );
    let vote = start_vote(&redis, &vote_identity).await;

    // The health listener is plaintext, answers liveness and readiness,
    // and never serves the business API.
    assert_eq!(
        probe::health(vote.health, "liveness").await,
        Ok(ServingStatus::Serving)
    );
    let plain_on_health = VoteServiceClient::new(client::connect(vote.health).await.unwrap())
        .cast_vote(cast("through-the-probe-port"))
        .await
        .unwrap_err();
    assert_eq!(
        plain_on_health.code(),
        Code::Unimplemented,
        "{plain_on_health:?}"
    );

    // A plaintext client gets nothing from the business port.
    assert!(
        probe::health(vote.addr, "").await.is_err(),
        "plaintext must not be answered by a TLS server"
    );

    // The gateway's identity votes.
    let gateway = client_tls(
        &dir.path().join("gateway"),
        &ca,
        &["gateway", GATEWAY],
        &ca.cert_pem,
    );
    cast_with(vote.addr, &gateway, "voter-over-mtls")
        .await
        .unwrap();

    // A certificate from the CA that names no allowed identity gets in
    // (health answers) but may not vote; the answer names no allowed name.
    let intruder = client_tls(
        &dir.path().join("intruder"),
        &ca,
        &["spiffe://votemesh/intruder"],
        &ca.cert_pem,
    );
    assert_eq!(
        health_with(vote.addr, &intruder).await.ok(),
        Some(ServingStatus::Serving)
    );
    let denied = cast_with(vote.addr, &intruder, "intruder")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(!denied.message().contains("spiffe://"), "{denied:?}");

    // A certificate with the right name from another CA, and an expired
    // one from the right CA, fail the handshake.
    let other_ca = TestCa::new("another CA");
    let stranger = client_tls(
        &dir.path().join("stranger"),
        &other_ca,
        &[GATEWAY],
        &ca.cert_pem,
    );
    assert!(
        health_with(vote.addr, &stranger).await.is_err(),
        "a certificate from another CA"
    );
    assert!(cast_with(vote.addr, &stranger, "stranger").await.is_err());
    let expired_identity = MountedIdentity::write(
        &dir.path().join("expired"),
        &ca.issue_expired(&[GATEWAY]),
        &ca.cert_pem,
    );
    let expired = Tls::load(expired_identity.files()).unwrap();
    let refused = health_with(vote.addr, &expired).await;
    assert!(refused.is_err(), "an expired certificate: {refused:?}");

    // Refusals are counted (and logged at debug level only): the
    // plaintext client, the stranger's two tries and the expired
    // certificate at the handshake; the intruder's call by the policy.
    wait_for("the refused handshakes counted", WAIT, || async {
        let scrape = metrics::scrape(vote.health).await.unwrap();
        metrics::value(
            &scrape,
            "votemesh_tls_handshake_failures_total",
            &[("reason", "refused")],
        ) >= 4.0
    })
    .await;
    let scrape = metrics::scrape(vote.health).await.unwrap();
    assert_eq!(
        metrics::value(
            &scrape,
            "votemesh_tls_calls_denied_total",
            &[("rpc_service", "votemesh.v1.VoteService")]
        ),
        1.0
    );

    // `--health-check` asks over mutual TLS with the component's own
    // identity; without it, it cannot get an answer.
    let binary = env!("CARGO_BIN_EXE_votemesh-vote");
    let check = Command::new(binary)
        .args(["--health-check", "--listen", &vote.addr.to_string()])
        .envs(vote_identity.env())
        .output()
        .await
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let plain_check = Command::new(binary)
        .args(["--health-check", "--listen", &vote.addr.to_string()])
        .env_remove("TLS_CERT_FILE")
        .env_remove("TLS_KEY_FILE")
        .env_remove("TLS_CA_FILE")
        .output()
        .await
        .unwrap();
    assert!(!plain_check.status.success(), "{plain_check:?}");
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let first = ca.issue(&VOTE_NAMES);
    let vote_identity = MountedIdentity::write(&dir.path().join("vote"), &first, &ca.cert_pem);
    let vote = start_vote(&redis, &vote_identity).await;
    let gateway_identity = MountedIdentity::write(
        &dir.path().join("gateway"),
        &ca.issue(&["gateway", GATEWAY]),
        &ca.cert_pem,
    );
    let gateway = Tls::load(gateway_identity.files()).unwrap();
    assert_eq!(
        server_certificate(vote.addr, &gateway, "vote")
            .await
            .unwrap(),
        der_of(&first.cert_pem)
    );

    // Steady load: one long-lived connection, and one new connection per
    // call, both counting every failure.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let long_lived = {
        let channel = client::connect_tls(vote.addr, gateway.clone(), "vote")
            .await
            .unwrap();
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        tokio::spawn(async move {
            let mut client = VoteServiceClient::new(channel);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match client.cast_vote(cast(&format!("long-{n}"))).await {
                    Ok(_) => calls.fetch_add(1, Ordering::SeqCst),
                    Err(status) => {
                        eprintln!("long-lived call failed: {status:?}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    let fresh = {
        let (stop, calls, failures, gateway) = (
            stop.clone(),
            calls.clone(),
            failures.clone(),
            gateway.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match cast_with(vote.addr, &gateway, &format!("fresh-{n}")).await {
                    Ok(()) => calls.fetch_add(1, Ordering::SeqCst),
                    Err(status) => {
                        eprintln!("new-connection call failed: {status:?}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    wait_for("load running", WAIT, || async {
        calls.load(Ordering::SeqCst) >= 20
    })
    .await;

    // Both sides rotate, the way the kubelet updates a mounted Secret.
    let second = ca.issue(&VOTE_NAMES);
    vote_identity.rotate(&second, &ca.cert_pem);
    gateway_identity.rotate(&ca.issue(&["gateway", GATEWAY]), &ca.cert_pem);
    let new_der = der_of(&second.cert_pem);
    wait_for("new connections get the new certificate", WAIT, || async {
        server_certificate(vote.addr, &gateway, "vote")
            .await
            .ok()
            .as_ref()
            == Some(&new_der)
    })
    .await;
    let after = calls.load(Ordering::SeqCst);
    wait_for("load after the rotation", WAIT, || async {
        calls.load(Ordering::SeqCst) >= after + 20
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            server_certificate(vote.addr, &gateway, "vote")
                .await
                .unwrap(),
            new_der
        );
    }
    stop.store(true, Ordering::SeqCst);
    long_lived.await.unwrap();
    fresh.await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no call failed during the rotation"
    );

    // The rotated client identity is what new connections present: it
    // still votes, and health still answers over it.
    let mut health = HealthClient::new(
        client::connect_tls(vote.addr, gateway, "vote")
            .await
            .unwrap(),
    );
    let status = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn the_dev_script_makes_identities_the_binaries_accept() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/mtls-dev-certs.sh");
    let made = Command::new("sh")
        .arg(&script)
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let files = |name: &str| votemesh::tls::TlsFiles {
        cert: dir.path().join(name).join("tls.crt"),
        key: dir.path().join(name).join("tls.key"),
        ca: dir.path().join(name).join("ca.crt"),
    };
    let vote_files = files("vote");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let health: SocketAddr = ([127, 0, 0, 1], free_port().await.unwrap()).into();
    let _vote = Command::new(env!("CARGO_BIN_EXE_votemesh-vote"))
        .env("VOTE_LISTEN_ADDR", addr.to_string())
        .env("HEALTH_LISTEN_ADDR", health.to_string())
        .env("REDIS_URL", redis.url().expose())
        .env("TLS_ALLOWED_CLIENTS", ALLOWED)
        .env("TLS_CERT_FILE", &vote_files.cert)
        .env("TLS_KEY_FILE", &vote_files.key)
        .env("TLS_CA_FILE", &vote_files.ca)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("vote ready", WAIT, || async {
        probe::health(health, "").await == Ok(ServingStatus::Serving)
    })
    .await;

    // The operator's identity votes, as grpcurl -cert/-key/-cacert would,
    // verifying the name a local run uses.
    let operator = Tls::load(files("operator")).unwrap();
    let channel = client::connect_tls(addr, operator, "localhost")
        .await
        .unwrap();
    VoteServiceClient::new(channel)
        .cast_vote(cast("operator-vote"))
        .await
        .unwrap();
    // The worker's identity is from the same CA but may not vote.
    let worker = Tls::load(files("worker")).unwrap();
    let channel = client::connect_tls(addr, worker, "vote-pods")
        .await
        .unwrap();
    let denied = VoteServiceClient::new(channel)
        .cast_vote(cast("worker-vote"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_health_listener_answers_until_the_drain_has_ended() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let vote_identity = MountedIdentity::write(
        &dir.path().join("vote"),
        &ca.issue(&VOTE_NAMES),
        &ca.cert_pem,
    );
    let mut vote = start_vote(&redis, &vote_identity).await;
    let gateway = client_tls(
        &dir.path().join("gateway"),
        &ca,
        &["gateway", GATEWAY],
        &ca.cert_pem,
    );

    // A reflection stream the client keeps open holds the drain open.
    let channel = client::connect_tls(vote.addr, gateway, "vote")
        .await
        .unwrap();
    let (requests, stream) = tokio::sync::mpsc::channel(1);
    let list_services = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    requests.send(list_services()).await.unwrap();
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(stream))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());

    signal(vote._child.id().unwrap(), libc::SIGTERM);
    // Draining: the kubelet's probe still gets an answer, NOT_SERVING.
    wait_for(
        "readiness NOT_SERVING on the health listener",
        WAIT,
        || async { probe::health(vote.health, "").await == Ok(ServingStatus::NotServing) },
    )
    .await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            probe::health(vote.health, "liveness").await,
            Ok(ServingStatus::Serving),
            "the health listener answers while the drain goes on"
        );
    }

    // The stream ends: the drain ends, and the process exits 0.
    drop(requests);
    drop(responses);
    let status = tokio::time::timeout(WAIT, vote._child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_server_sees_a_rotated_client_certificate() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("votemesh test CA");
    let vote_identity = MountedIdentity::write(
        &dir.path().join("vote"),
        &ca.issue(&VOTE_NAMES),
        &ca.cert_pem,
    );
    let vote = start_vote(&redis, &vote_identity).await;

    // The client starts with an identity vote does not allow...
    let client_identity = MountedIdentity::write(
        &dir.path().join("client"),
        &ca.issue(&["gateway", "spiffe://votemesh/not-yet"]),
        &ca.cert_pem,
    );
    let client_tls = Tls::load(client_identity.files()).unwrap();
    let denied = cast_with(vote.addr, &client_tls, "before")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // ...and its files are rotated on disk to one naming the gateway: new
    // connections present it, and vote authorizes the new name.
    client_identity.rotate(&ca.issue(&["gateway", GATEWAY]), &ca.cert_pem);
    wait_for(
        "vote accepts the rotated client certificate",
        WAIT,
        || async { cast_with(vote.addr, &client_tls, "after").await.is_ok() },
    )
    .await;

    // Rotated back to a name vote does not allow: refused again, so the
    // server goes by the certificate of each new connection.
    client_identity.rotate(&ca.issue(&["spiffe://votemesh/not-again"]), &ca.cert_pem);
    wait_for(
        "vote refuses the certificate rotated away",
        WAIT,
        || async {
            cast_with(vote.addr, &client_tls, "again")
                .await
                .is_err_and(|status| status.code() == Code::PermissionDenied)
        },
    )
    .await;
}
