//! The gRPC handler of `votemesh.v1.VoteService`: translates requests to
//! [`crate::intake`] and the queue, and maps every error to a `Status` in
//! one place ([`status_of`]).
//!
//! A failed push does not touch readiness: one request's failure (a pool
//! wait under load, a slow answer) says little about Redis, and turning
//! NOT_SERVING then would take pods out of their Service exactly when load
//! is highest. Readiness follows the periodic probe ([`crate::run`]).

use std::{sync::Arc, time::SystemTime};

use tonic::{Request, Response, Status};
use votemesh::{
    idempotency::Idempotency,
    poll::Poll,
    proto::v1::{
        CastVoteRequest, CastVoteResponse, ListOptionsRequest, ListOptionsResponse,
        vote_service_server::VoteService,
    },
    queue::{QueueError, VoteSink},
    telemetry,
};

use crate::intake::{self, VoteError};

/// The handler: holds the queue, the poll and this instance's name.
#[derive(Debug)]
pub struct VoteApi<Q> {
    queue: Arc<Q>,
    poll: Poll,
    served_by: String,
}

impl<Q: VoteSink> VoteApi<Q> {
    /// A handler pushing to `queue`.
    pub fn new(queue: Arc<Q>, poll: Poll, served_by: String) -> Self {
        Self {
            queue,
            poll,
            served_by,
        }
    }
}

#[tonic::async_trait]
impl<Q: VoteSink> VoteService for VoteApi<Q> {
    async fn cast_vote(
        &self,
        request: Request<CastVoteRequest>,
    ) -> Result<Response<CastVoteResponse>, Status> {
        let idempotency = Idempotency::of_call(request.metadata())
            .map_err(|error| refused(&VoteError::from(error)))?;
        let request = request.into_inner();
        let mut vote = intake::new_vote(
            &request.voter_id,
            &request.option,
            &self.poll,
            telemetry::current_context_carrier(),
        )
        .map_err(|error| refused(&error))?;
        vote.idempotency = idempotency;
        match self.queue.push(&vote).await {
            Ok(first) if first.option_id != vote.option_id => {
                // The key's earlier call was for another option: this call
                // is not its repeat, and was not queued.
                Err(refused(&VoteError::IdempotencyKeyReused {
                    queued: first.option_id,
                }))
            }
            Ok(queued) => {
                // A repeat of a call already queued is answered with that
                // call's vote (its id, time and sequence): nothing new was
                // queued, and both log lines name one vote.
                let repeat = queued.vote_id != vote.vote_id;
                if repeat {
                    metrics::counter!("votemesh_votes_repeated_total").increment(1);
                } else {
                    metrics::counter!("votemesh_votes_accepted_total").increment(1);
                }
                tracing::debug!(vote_id = %queued.vote_id, option_id = %queued.option_id, sequence = queued.sequence, repeat, "vote queued");
                Ok(Response::new(CastVoteResponse {
                    vote_id: queued.vote_id.to_string(),
                    cast_at: Some(SystemTime::from(queued.cast_at).into()),
                    served_by: self.served_by.clone(),
                }))
            }
            Err(error) => {
                tracing::warn!(%error, vote_id = %vote.vote_id, "vote not acknowledged");
                Err(refused(&VoteError::Queue(error)))
            }
        }
    }

    async fn list_options(
        &self,
        _request: Request<ListOptionsRequest>,
    ) -> Result<Response<ListOptionsResponse>, Status> {
        Ok(Response::new(ListOptionsResponse {
            options: self.poll.options().iter().map(Into::into).collect(),
        }))
    }
}

/// A vote refused: counted by reason (`votemesh_votes_rejected_total`),
/// answered with its status.
fn refused(error: &VoteError) -> Status {
    metrics::counter!("votemesh_votes_rejected_total", "reason" => reason_of(error)).increment(1);
    status_of(error)
}

/// A short, fixed label for why a vote was refused.
pub fn reason_of(error: &VoteError) -> &'static str {
    match error {
        VoteError::BadBallot(_) => "invalid_ballot",
        VoteError::BadIdempotencyKey(_) => "invalid_idempotency_key",
        VoteError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
        VoteError::UnknownOption { .. } => "unknown_option",
        VoteError::Queue(QueueError::Unavailable(_)) => "queue_unavailable",
        VoteError::Queue(QueueError::Unconfirmed(_)) => "queue_unconfirmed",
        VoteError::Queue(QueueError::Full(_)) => "queue_full",
        VoteError::Queue(QueueError::Failed(_)) => "queue_failed",
    }
}

/// The one mapping from vote errors to gRPC statuses.
pub fn status_of(error: &VoteError) -> Status {
    match error {
        VoteError::BadBallot(_)
        | VoteError::UnknownOption { .. }
        | VoteError::BadIdempotencyKey(_)
        | VoteError::IdempotencyKeyReused { .. } => Status::invalid_argument(error.to_string()),
        VoteError::Queue(QueueError::Unavailable(_)) => Status::unavailable(
            "the vote queue is unavailable; the vote was not queued and retrying is safe",
        ),
        VoteError::Queue(QueueError::Unconfirmed(_)) => Status::unavailable(
            "the vote queue did not answer in time; the vote may or may not have been \
             queued; retrying is safe with the same idempotency-key (it counts once)",
        ),
        VoteError::Queue(QueueError::Full(_)) => Status::resource_exhausted(
            "the vote queue is full; the vote was not queued, please retry later",
        ),
        VoteError::Queue(QueueError::Failed(_)) => {
            Status::internal("the vote queue failed; the vote was not taken")
        }
    }
}
