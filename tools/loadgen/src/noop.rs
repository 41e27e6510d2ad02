//! The gRPC floor: a bare tonic server whose `votemesh.v1.VoteService`
//! answers every CastVote at once with a fixed acknowledgement, doing no
//! work at all. Driven through the same generator as the real vote
//! service, it measures what the generator, tonic and HTTP/2 cost on this
//! machine, the ceiling a CastVote figure is read against.
//!
//! It is deliberately bare: no health, reflection, tracing or limits
//! layers; what the real service adds above it is what the ratio shows.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use votemesh::proto::v1::{
    CastVoteRequest, CastVoteResponse, ListOptionsRequest, ListOptionsResponse, PollOption,
    vote_service_server::{VoteService, VoteServiceServer},
};

/// What the no-op server answers `served_by`.
pub const SERVED_BY: &str = "noop";

/// The no-op VoteService.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopVotes;

#[tonic::async_trait]
impl VoteService for NoopVotes {
    async fn cast_vote(
        &self,
        _request: Request<CastVoteRequest>,
    ) -> Result<Response<CastVoteResponse>, Status> {
        Ok(Response::new(CastVoteResponse {
            vote_id: String::new(),
            cast_at: None,
            served_by: SERVED_BY.to_owned(),
        }))
    }

    async fn list_options(
        &self,
        _request: Request<ListOptionsRequest>,
    ) -> Result<Response<ListOptionsResponse>, Status> {
        let option = |id: &str, label: &str| PollOption {
            id: id.to_owned(),
            label: label.to_owned(),
        };
        Ok(Response::new(ListOptionsResponse {
            options: vec![option("a", "Cats"), option("b", "Dogs")],
        }))
    }
}

/// Serves the no-op VoteService on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(VoteServiceServer::new(NoopVotes))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
}
