//! A gRPC server (here the vote service, assembled by
//! `votemesh::grpc::serve` as every one is) does not keep connections that
//! never become calls: one that sends nothing, one that sends half an
//! HTTP/1.1 request (the `/metrics` path speaks HTTP/1.1), and one that
//! sends the HTTP/2 preface and then nothing are all closed within a
//! minute (by the connection age and its grace, and hyper's header
//! timeout), while calls go on being answered.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use votemesh::{
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::memory::MemoryQueue,
};
use votemesh_testing::{ANY_PORT, TestServer};
use votemesh_testing_services::{PROBE_INTERVAL, SERVED_BY, cats_and_dogs};

/// Longest a connection that never becomes a call may stay open.
const WITHIN: Duration = Duration::from_secs(60);

/// Reads until the server closes `stream`; panics if it is still open
/// after [`WITHIN`].
async fn closed_within(mut stream: TcpStream) {
    let read = tokio::time::timeout(WITHIN, async {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {WITHIN:?}"
    );
}

#[tokio::test]
async fn connections_that_never_become_calls_are_closed_while_calls_go_on() {
    const EACH: usize = 20;
    let server = TestServer::spawn(ANY_PORT, |listener, shutdown| {
        votemesh_vote::run(
            listener,
            MemoryQueue::new(),
            cats_and_dogs(),
            SERVED_BY.to_owned(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await
    .ready()
    .await;
    let addr = server.addr;

    let mut idle = Vec::new();
    for _ in 0..EACH {
        idle.push(TcpStream::connect(addr).await.unwrap());
        let mut half_sent = TcpStream::connect(addr).await.unwrap();
        half_sent
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: vote\r\nAcc")
            .await
            .unwrap();
        idle.push(half_sent);
        let mut preface_only = TcpStream::connect(addr).await.unwrap();
        preface_only
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        idle.push(preface_only);
    }

    let mut client = VoteServiceClient::new(votemesh::client::connect(addr).await.unwrap());
    client
        .cast_vote(CastVoteRequest {
            voter_id: "meanwhile".into(),
            option: "a".into(),
        })
        .await
        .unwrap();

    let closing: Vec<_> = idle
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s)))
        .collect();
    for closed in closing {
        closed.await.unwrap();
    }
}
