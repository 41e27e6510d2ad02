//! The gRPC handler of `votemesh.v1.ResultService`.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sea_orm::DatabaseConnection;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use votemesh::{
    poll::Poll,
    proto::v1::{
        self, GetResultsRequest, WatchResultsRequest, result_service_server::ResultService,
    },
    shutdown::CancellationToken,
};

use crate::{feed::TallyFeed, tally};

/// Answers GetResults from the database and WatchResults from the feed.
#[derive(Debug)]
pub struct ResultApi {
    db: DatabaseConnection,
    poll: Poll,
    feed: TallyFeed,
    shutdown: CancellationToken,
}

impl ResultApi {
    /// A handler over `db`, streaming from `feed` until `shutdown`.
    pub fn new(
        db: DatabaseConnection,
        poll: Poll,
        feed: TallyFeed,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            db,
            poll,
            feed,
            shutdown,
        }
    }
}

/// The stream of tallies a WatchResults call receives.
pub type TallyStream = Pin<Box<dyn Stream<Item = Result<v1::Tally, Status>> + Send>>;

#[tonic::async_trait]
impl ResultService for ResultApi {
    async fn get_results(
        &self,
        _request: Request<GetResultsRequest>,
    ) -> Result<Response<v1::Tally>, Status> {
        let tally = tally::read(&self.db, &self.poll).await.map_err(|error| {
            tracing::warn!(%error, "GetResults: cannot read the tally");
            Status::unavailable("the results database is unavailable; please retry")
        })?;
        Ok(Response::new((&tally).into()))
    }

    type WatchResultsStream = TallyStream;

    async fn watch_results(
        &self,
        _request: Request<WatchResultsRequest>,
    ) -> Result<Response<Self::WatchResultsStream>, Status> {
        let stream = WatchStream::new(self.feed.clone())
            .filter_map(|tally| async move { tally.as_ref().map(|tally| Ok(tally.into())) })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
