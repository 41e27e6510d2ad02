//! The gRPC handler of `votemesh.v1.ResultService`.

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use votemesh::{
    poll::Poll,
    proto::v1::{
        self, GetResultsRequest, WatchResultsRequest, result_service_server::ResultService,
    },
    shutdown::CancellationToken,
    store::Databases,
};

use crate::{
    feed::{self, TallyFeed},
    tally,
};

/// Answers GetResults and WatchResults from the feed (GetResults reads
/// the database itself only when the feed's tally is older than
/// `max_age`: the feed is failing, or has not read yet).
#[derive(Debug)]
pub struct ResultApi {
    databases: Databases,
    poll: Poll,
    feed: TallyFeed,
    max_age: Duration,
    shutdown: CancellationToken,
}

impl ResultApi {
    /// A handler over `databases`, answering from `feed` while its tally
    /// is at most `max_age` old, streaming from it until `shutdown`.
    pub fn new(
        databases: Databases,
        poll: Poll,
        feed: TallyFeed,
        max_age: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            databases,
            poll,
            feed,
            max_age,
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
        let latest = self
            .feed
            .borrow()
            .clone()
            .filter(|tally| feed::is_fresh(tally, self.max_age));
        let tally = match latest {
            Some(tally) => tally,
            None => tally::read(&self.databases, &self.poll)
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "GetResults: cannot read the tally");
                    Status::unavailable("the results database is unavailable; please retry")
                })?,
        };
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
