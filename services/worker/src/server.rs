//! The gRPC handler of `votemesh.v1.WorkerService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use votemesh::{
    proto::v1::{GetStatsRequest, WorkerStats, worker_service_server::WorkerService},
    queue::VoteSource,
};

use crate::stats::Stats;

/// Answers GetStats from the drain loop's counters.
#[derive(Debug)]
pub struct WorkerApi<S> {
    source: Arc<S>,
    stats: Arc<Stats>,
    worker_id: String,
}

impl<S> WorkerApi<S> {
    /// A handler reporting `stats` and the depth of `source`.
    pub fn new(source: Arc<S>, stats: Arc<Stats>, worker_id: String) -> Self {
        Self {
            source,
            stats,
            worker_id,
        }
    }
}

#[tonic::async_trait]
impl<S: VoteSource> WorkerService for WorkerApi<S> {
    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<WorkerStats>, Status> {
        let queue_depth = match self.source.backlog().await {
            Ok(backlog) => i64::try_from(backlog.depth).unwrap_or(i64::MAX),
            Err(_) => -1,
        };
        Ok(Response::new(WorkerStats {
            worker_id: self.worker_id.clone(),
            batches_committed: Stats::get(&self.stats.batches_committed),
            votes_committed: Stats::get(&self.stats.votes_committed),
            votes_superseded: Stats::get(&self.stats.votes_superseded),
            dead_lettered: Stats::get(&self.stats.dead_lettered),
            queue_depth,
        }))
    }
}
