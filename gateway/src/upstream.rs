//! The gRPC clients of the vote and result services. Each call carries the
//! caller's trace context and a deadline ([`crate::UPSTREAM_TIMEOUT`]).

use std::time::Duration;

use tonic::{Request, Status};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use votemesh::{
    client::{self, ClientError, TracedChannel as Traced, Transport},
    proto::v1::{
        CastVoteRequest, CastVoteResponse, GetResultsRequest, ListOptionsRequest, PollOption,
        Tally, WatchResultsRequest, result_service_client::ResultServiceClient,
        vote_service_client::VoteServiceClient,
    },
};

/// Longest the gateway waits for an upstream's health (for `/readyz`).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Clients of both services; cheap to clone (they share connections).
#[derive(Clone, Debug)]
pub struct Upstream {
    vote: VoteServiceClient<Traced>,
    vote_health: HealthClient<Traced>,
    result: ResultServiceClient<Traced>,
    result_health: HealthClient<Traced>,
    timeout: Duration,
}

impl Upstream {
    /// Clients for `vote_addr` and `result_addr` over `transport`;
    /// connects lazily and reconnects by itself.
    pub fn connect(
        vote_addr: &str,
        result_addr: &str,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Ok(Self::new(
            client::channel(vote_addr, transport.clone())?,
            client::channel(result_addr, transport)?,
            timeout,
        ))
    }

    /// Clients over channels already made (each balanced over its
    /// service's addresses; see [`votemesh::client::channel_to`]).
    pub fn new(vote: Traced, result: Traced, timeout: Duration) -> Self {
        Self {
            vote: VoteServiceClient::new(vote.clone()),
            vote_health: HealthClient::new(vote),
            result: ResultServiceClient::new(result.clone()),
            result_health: HealthClient::new(result),
            timeout,
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Casts a vote.
    pub async fn cast_vote(
        &self,
        voter_id: &str,
        option: &str,
    ) -> Result<CastVoteResponse, Status> {
        let request = self.request(CastVoteRequest {
            voter_id: voter_id.to_owned(),
            option: option.to_owned(),
        });
        Ok(self.vote.clone().cast_vote(request).await?.into_inner())
    }

    /// The poll's options.
    pub async fn options(&self) -> Result<Vec<PollOption>, Status> {
        let request = self.request(ListOptionsRequest {});
        Ok(self
            .vote
            .clone()
            .list_options(request)
            .await?
            .into_inner()
            .options)
    }

    /// The current tally.
    pub async fn results(&self) -> Result<Tally, Status> {
        let request = self.request(GetResultsRequest {});
        Ok(self.result.clone().get_results(request).await?.into_inner())
    }

    /// Opens a WatchResults stream (no deadline: it lasts).
    pub async fn watch_results(&self) -> Result<tonic::Streaming<Tally>, Status> {
        Ok(self
            .result
            .clone()
            .watch_results(WatchResultsRequest {})
            .await?
            .into_inner())
    }

    /// The health status (`SERVING`, `NOT_SERVING`) of the vote and the
    /// result service, or `None` for one that does not answer.
    ///
    /// Each check has [`HEALTH_TIMEOUT`], far less than a call's: `/readyz`
    /// answers in time for the kubelet's probe even while an upstream has
    /// no address at all (a fresh deploy, every pod replaced).
    pub async fn health(&self) -> (Option<String>, Option<String>) {
        let check = |mut client: HealthClient<Traced>| async move {
            let mut request = Request::new(HealthCheckRequest::default());
            request.set_timeout(HEALTH_TIMEOUT);
            let response = tokio::time::timeout(HEALTH_TIMEOUT, client.check(request))
                .await
                .ok()?
                .ok()?;
            Some(response.into_inner().status().as_str_name().to_owned())
        };
        tokio::join!(
            check(self.vote_health.clone()),
            check(self.result_health.clone())
        )
    }
}
