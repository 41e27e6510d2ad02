//! A retried CastVote is the same vote, never a later one, against real
//! redis-server and PostgreSQL and through votemesh's own client stack
//! (retry layer included).
//!
//! The race it closes: vote A is queued but its answer is lost; the same
//! voter's vote B is queued; A is retried. Stamped anew, the retry would be
//! later than B and win. With the call's idempotency key, the retry finds
//! A's marker, is not queued again, and is answered as A was.

use std::{collections::BTreeMap, net::SocketAddr, sync::Mutex, time::Duration};

use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Channel};
use votemesh::{
    client::Transport,
    idempotency::METADATA_KEY,
    proto::v1::{
        CastVoteRequest, CastVoteResponse, ListOptionsRequest, ListOptionsResponse,
        vote_service_client::VoteServiceClient,
        vote_service_server::{VoteService, VoteServiceServer},
    },
    queue::QUEUE_KEY,
    store,
};
use votemesh_testing::{ANY_PORT, PostgresServer, RedisServer, probe};
use votemesh_testing_services::{start_vote, start_worker, worker_settings};

const WAIT: Duration = Duration::from_secs(30);

/// The moment a relayed call's answer is about to be lost: the relay says
/// it got there, then waits to be told to go on.
struct Gate {
    reached: oneshot::Sender<()>,
    go_on: oneshot::Receiver<()>,
}

/// A VoteService in front of the real one, on the network path between the
/// client and the vote service: it passes every call on (metadata
/// included) and, for the first one, loses the answer: once the vote
/// service has answered, it holds the call at the [`Gate`] and then
/// answers UNAVAILABLE, as a connection reset after the answer left would
/// end the call for the client.
struct LosesFirstAnswer {
    upstream: VoteServiceClient<Channel>,
    gate: Mutex<Option<Gate>>,
}

#[tonic::async_trait]
impl VoteService for LosesFirstAnswer {
    async fn cast_vote(
        &self,
        request: Request<CastVoteRequest>,
    ) -> Result<Response<CastVoteResponse>, Status> {
        let key = request.metadata().get(METADATA_KEY).cloned();
        let mut relayed = Request::new(request.into_inner());
        if let Some(key) = key {
            relayed.metadata_mut().insert(METADATA_KEY, key);
        }
        let answer = self.upstream.clone().cast_vote(relayed).await;
        let gate = self.gate.lock().unwrap().take();
        match gate {
            Some(gate) => {
                assert!(answer.is_ok(), "the first attempt is queued: {answer:?}");
                gate.reached.send(()).unwrap();
                gate.go_on.await.unwrap();
                Err(Status::unavailable("the answer was lost"))
            }
            None => answer,
        }
    }

    async fn list_options(
        &self,
        request: Request<ListOptionsRequest>,
    ) -> Result<Response<ListOptionsResponse>, Status> {
        self.upstream
            .clone()
            .list_options(request.into_inner())
            .await
    }
}

async fn start_relay(upstream: SocketAddr, gate: Gate) -> SocketAddr {
    let channel = Channel::from_shared(format!("http://{upstream}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let relay = LosesFirstAnswer {
        upstream: VoteServiceClient::new(channel),
        gate: Mutex::new(Some(gate)),
    };
    let listener = tokio::net::TcpListener::bind(ANY_PORT).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VoteServiceServer::new(relay))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn vote(voter_id: &str, option: &str) -> Request<CastVoteRequest> {
    let mut request = Request::new(CastVoteRequest {
        voter_id: voter_id.into(),
        option: option.into(),
    });
    request.set_timeout(Duration::from_secs(20));
    request
}

#[tokio::test]
async fn a_retry_whose_first_attempt_was_queued_does_not_override_the_voters_next_vote() {
    let redis = RedisServer::start().await.unwrap();
    let postgres = PostgresServer::start().await.unwrap();
    let db = store::connect(&postgres.url()).await.unwrap();
    store::migrate(&db).await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let (reached, reached_rx) = oneshot::channel();
    let (go_on_tx, go_on) = oneshot::channel();
    let relay = start_relay(service.addr, Gate { reached, go_on }).await;

    // A goes through votemesh's client stack, whose retry layer retries
    // the UNAVAILABLE the relay answers once A's answer is lost.
    let channel = votemesh::client::channel(&format!("http://{relay}"), Transport::Plaintext);
    let via_relay = VoteServiceClient::new(channel.unwrap());
    let vote_a = tokio::spawn(async move { via_relay.clone().cast_vote(vote("v1", "a")).await });
    reached_rx.await.unwrap();

    // A is queued; its caller does not know. B, cast now, is later.
    let mut direct = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());
    let b = direct
        .cast_vote(vote("v1", "b"))
        .await
        .unwrap()
        .into_inner();
    go_on_tx.send(()).unwrap();
    let a = vote_a.await.unwrap().expect("A's retry is answered OK");
    let a = a.into_inner();
    assert_ne!(a.vote_id, b.vote_id);

    // The retry was not queued again: A and B are the only messages.
    let queued = redis.command(&["LLEN", QUEUE_KEY]).await.unwrap();
    assert_eq!(queued.trim(), ":2", "A once and B once");

    // Drained, B is the voter's vote.
    let worker = start_worker(&redis, &postgres, worker_settings("w1")).await;
    let expected = BTreeMap::from([("b".to_owned(), 1)]);
    probe::wait_for("B counted, A overridden", WAIT, || async {
        votemesh_testing::stored_tally(&db).await.unwrap() == expected
    })
    .await;
    worker.stop().await;
    service.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_answered_as_the_first_attempt_and_a_reused_or_bad_one_is_refused()
 {
    let redis = RedisServer::start().await.unwrap();
    let service = start_vote(&redis, ANY_PORT).await;
    let mut client = VoteServiceClient::new(votemesh::client::connect(service.addr).await.unwrap());
    let with_key = |voter: &str, option: &str, key: &'static str| {
        let mut request = vote(voter, option);
        request
            .metadata_mut()
            .insert(METADATA_KEY, key.parse().unwrap());
        request
    };

    let first = client.cast_vote(with_key("v1", "a", "k-1")).await.unwrap();
    let repeat = client.cast_vote(with_key("v1", "a", "k-1")).await.unwrap();
    let (first, repeat) = (first.into_inner(), repeat.into_inner());
    assert_eq!(repeat.vote_id, first.vote_id, "a repeat is the same vote");
    assert_eq!(repeat.cast_at, first.cast_at);
    // The same key from another voter is that voter's own call.
    let other = client.cast_vote(with_key("v2", "a", "k-1")).await.unwrap();
    assert_ne!(other.into_inner().vote_id, first.vote_id);
    // The key reused by the voter for another option is no repeat.
    let reused = client
        .cast_vote(with_key("v1", "b", "k-1"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::InvalidArgument, "{reused:?}");
    assert!(reused.message().contains("new key"), "{reused:?}");
    let queued = redis.command(&["LLEN", QUEUE_KEY]).await.unwrap();
    assert_eq!(queued.trim(), ":2");

    let bad = client
        .cast_vote(with_key("v1", "a", "has space"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("idempotency-key"), "{bad:?}");
    service.stop().await;
}
