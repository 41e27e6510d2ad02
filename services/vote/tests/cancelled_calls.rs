//! Calls that never get their answer are still measured: a call whose
//! deadline passes, or whose caller goes away, leaves `_active_requests`
//! where it was and counts in `_requests_total` (DEADLINE_EXCEEDED or
//! CANCELLED) and `_duration`, on the server (votemesh's server assembly,
//! `grpc::serve`, over a handler that never answers) and on the client
//! (votemesh's client stack against a server that never answers).
//!
//! The registry is per process: the server test measures only the
//! server's side (its client is a plain tonic channel, not measured), the
//! client test only the client's side (its server is a bare tonic server,
//! not measured), so the two can run side by side. Nothing here races a
//! timer: every call waits on a handler that never answers.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};
use votemesh::health::Health;
use votemesh::{
    client::Transport,
    proto::v1::{
        CastVoteRequest, CastVoteResponse, ListOptionsRequest, ListOptionsResponse,
        vote_service_client::VoteServiceClient,
        vote_service_server::{VoteService, VoteServiceServer},
    },
};
use votemesh_testing::{
    ANY_PORT, TestServer,
    metrics::{Scrape, parse, scrape, value},
    probe::wait_for,
};

const WAIT: Duration = Duration::from_secs(20);
/// The deadline of the calls the client test makes.
const DEADLINE: Duration = Duration::from_millis(300);
/// The deadline of the calls the server test makes: long enough that every
/// call is seen in flight, and the client's side held, well before it.
const SERVER_DEADLINE: Duration = Duration::from_secs(3);
/// Calls of each kind.
const CALLS: usize = 8;

const CAST_VOTE: [(&str, &str); 2] = [
    ("rpc_service", "votemesh.v1.VoteService"),
    ("rpc_method", "CastVote"),
];
const LIST_OPTIONS: [(&str, &str); 2] = [
    ("rpc_service", "votemesh.v1.VoteService"),
    ("rpc_method", "ListOptions"),
];

fn cast(voter_id: &str) -> CastVoteRequest {
    CastVoteRequest {
        voter_id: voter_id.into(),
        option: "a".into(),
    }
}

/// The value of `metric` for `method`, for calls that ended with `code`
/// if one is given.
fn count(metrics: &Scrape, metric: &str, method: [(&str, &str); 2], code: Option<Code>) -> f64 {
    let code = code.map(|code| i32::from(code).to_string());
    let mut labels = method.to_vec();
    if let Some(code) = &code {
        labels.push(("rpc_grpc_status_code", code));
    }
    value(metrics, metric, &labels)
}

/// A TCP relay to a server whose client-to-server direction can be held
/// ([`Relay::hold`]): what the client sends after that (such as its
/// cancellation of a call at its own deadline) never reaches the server,
/// so the server's timeout is what ends the call, whatever the order in
/// which the client's and the server's timers fire. Dropped, it closes
/// its connections.
struct Relay {
    addr: SocketAddr,
    state: watch::Sender<Relaying>,
}

/// What a [`Relay`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relaying {
    /// Passes bytes both ways.
    Both,
    /// Passes only the server's bytes; holds the client's.
    ServerOnly,
    /// Closes every connection.
    Closed,
}

impl Relay {
    async fn to(server: SocketAddr) -> Self {
        let listener = TcpListener::bind(ANY_PORT).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, watched) = watch::channel(Relaying::Both);
        let until = |mut watched: watch::Receiver<Relaying>, wanted: fn(Relaying) -> bool| async move {
            let _ = watched.wait_for(|state| wanted(*state)).await;
        };
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap().0,
                    () = until(watched.clone(), |state| state == Relaying::Closed) => return,
                };
                let upstream = TcpStream::connect(server).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = upstream.into_split();
                let closed = until(watched.clone(), |state| state == Relaying::Closed);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                        () = closed => {}
                    }
                });
                let held = until(watched.clone(), |state| state != Relaying::Both);
                let closed = until(watched.clone(), |state| state == Relaying::Closed);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
                        // Held: the connection stays open, nothing passes.
                        () = held => closed.await,
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// From now on, nothing the client sends reaches the server.
    fn hold(&self) {
        self.state.send_replace(Relaying::ServerOnly);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.send_replace(Relaying::Closed);
    }
}

#[tokio::test]
async fn the_server_counts_calls_whose_deadline_passed_or_whose_caller_left() {
    let service = start_silent_server().await;
    let client = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());
    let server_metric = |metric: &'static str, labels: [(&'static str, &'static str); 2]| {
        let addr = service.addr;
        async move { value(&scrape(addr).await.unwrap(), metric, &labels) }
    };

    // Nothing answers: each call outlives its deadline. The caller's own
    // timer ends the call on its side (tonic's client enforces the
    // deadline too) but its cancellation is held back, so the server's
    // timeout drops the call, answering CANCELLED.
    let relay = Relay::to(service.addr).await;
    let late_client = VoteServiceClient::new(votemesh::client::connect(relay.addr).await.unwrap());
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let mut client = late_client.clone();
            tokio::spawn(async move {
                let mut request = Request::new(cast(&format!("late-{n}")));
                request.set_timeout(SERVER_DEADLINE);
                client.cast_vote(request).await
            })
        })
        .collect();
    wait_for("every call in flight", WAIT, || {
        let active = server_metric("rpc_server_active_requests", CAST_VOTE);
        async move { active.await == CALLS as f64 }
    })
    .await;
    relay.hold();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Cancelled, "{status:?}");
        assert_eq!(status.message(), "Timeout expired", "{status:?}");
    }
    wait_for("no CastVote in flight after the deadlines", WAIT, || {
        let active = server_metric("rpc_server_active_requests", CAST_VOTE);
        async move { active.await == 0.0 }
    })
    .await;
    let metrics = scrape(service.addr).await.unwrap();
    // The metric says why the calls ended: their deadline passed.
    let total = "rpc_server_requests_total";
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::DeadlineExceeded)),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::Cancelled)),
        0.0
    );
    assert_eq!(
        count(&metrics, "rpc_server_duration_seconds", CAST_VOTE, None),
        CALLS as f64
    );

    // Callers without a deadline that hang up.
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move { client.cast_vote(cast(&format!("gone-{n}"))).await })
        })
        .collect();
    wait_for("every call in flight", WAIT, || {
        let active = server_metric("rpc_server_active_requests", CAST_VOTE);
        async move { active.await == CALLS as f64 }
    })
    .await;
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    wait_for("no CastVote in flight after the callers left", WAIT, || {
        let active = server_metric("rpc_server_active_requests", CAST_VOTE);
        async move { active.await == 0.0 }
    })
    .await;
    let metrics = scrape(service.addr).await.unwrap();
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::Cancelled)),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::DeadlineExceeded)),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, "rpc_server_duration_seconds", CAST_VOTE, None),
        (2 * CALLS) as f64
    );
    drop(relay);
    service.stop().await;
}

/// A vote service that never answers.
struct Silent;

#[tonic::async_trait]
impl VoteService for Silent {
    async fn cast_vote(
        &self,
        _request: Request<CastVoteRequest>,
    ) -> Result<Response<CastVoteResponse>, Status> {
        std::future::pending().await
    }

    async fn list_options(
        &self,
        _request: Request<ListOptionsRequest>,
    ) -> Result<Response<ListOptionsResponse>, Status> {
        std::future::pending().await
    }
}

/// Serves [`Silent`] the way every votemesh server is assembled
/// ([`votemesh::grpc::serve`]: its timeout, limits and metrics layers).
async fn start_silent_server() -> TestServer {
    TestServer::spawn(ANY_PORT, |listener, shutdown| async move {
        let (health, health_service) = Health::new(&["votemesh.v1.VoteService"]).await;
        health.set_ready(true).await;
        votemesh::grpc::serve(
            listener,
            VoteServiceServer::new(Silent),
            health,
            health_service,
            shutdown,
        )
        .await
    })
    .await
}

/// Starts [`Silent`] on a loopback port, with no votemesh layer.
async fn start_silent() -> SocketAddr {
    let listener = TcpListener::bind(ANY_PORT).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VoteServiceServer::new(Silent))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// This process's metrics: the client's side.
fn client_metrics() -> Scrape {
    parse(&votemesh::metrics::render()).unwrap()
}

#[tokio::test]
async fn the_client_counts_its_deadline_as_deadline_exceeded_and_a_caller_gone_as_cancelled() {
    let addr = start_silent().await;
    let channel =
        votemesh::client::channel(&format!("http://{addr}"), Transport::Plaintext).unwrap();
    let client = VoteServiceClient::new(channel);

    // The client stack ends each call at its deadline (DEADLINE_EXCEEDED,
    // raised by the retry layer): counted as 4, not as UNAVAILABLE.
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut request = Request::new(cast(&format!("late-{n}")));
                request.set_timeout(DEADLINE);
                client.cast_vote(request).await
            })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    let metrics = client_metrics();
    let total = "rpc_client_requests_total";
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::DeadlineExceeded)),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, total, CAST_VOTE, Some(Code::Unavailable)),
        0.0
    );
    assert_eq!(
        count(&metrics, "rpc_client_duration_seconds", CAST_VOTE, None),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, "rpc_client_active_requests", CAST_VOTE, None),
        0.0
    );

    // Callers without a deadline that give up: their futures are dropped.
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.list_options(ListOptionsRequest {}).await })
        })
        .collect();
    wait_for("every ListOptions in flight", WAIT, || async {
        count(
            &client_metrics(),
            "rpc_client_active_requests",
            LIST_OPTIONS,
            None,
        ) == CALLS as f64
    })
    .await;
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    let metrics = client_metrics();
    assert_eq!(
        count(&metrics, total, LIST_OPTIONS, Some(Code::Cancelled)),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, "rpc_client_duration_seconds", LIST_OPTIONS, None),
        CALLS as f64
    );
    assert_eq!(
        count(&metrics, "rpc_client_active_requests", LIST_OPTIONS, None),
        0.0
    );
}
