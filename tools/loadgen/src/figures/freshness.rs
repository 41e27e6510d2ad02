//! Freshness: the time from a vote's acknowledgement to the first
//! WatchResults tally that counts it, at a steady rate of new voters.

use std::time::{Duration, Instant};

use crate::{recorder::Recorder, summary::Latency};
use tokio_stream::StreamExt;
use votemesh::proto::v1::{
    CastVoteRequest, WatchResultsRequest, result_service_client::ResultServiceClient,
    vote_service_client::VoteServiceClient,
};

use super::{Process, Suite};

impl Suite {
    /// Writes the freshness table.
    pub(super) async fn freshness(&mut self, vote: &Process, result: &Process) {
        let size = self.size.clone();
        let fresh = self.measure_freshness(vote, result).await;
        self.line(format!(
            "\n## Freshness: vote acknowledged -> tally on WatchResults\n\n\
             {} new voters vote at a steady {}/s (open loop) for {:?}; a vote counts as seen \
             when a WatchResults tally first holds at least as many votes as had been \
             acknowledged with it.\n\n\
             | votes/s | votes | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n\
             | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            fresh.0,
            size.fresh_rate,
            size.fresh_run,
            size.fresh_rate,
            fresh.0,
            fresh.1.p50,
            fresh.1.p90,
            fresh.1.p99,
            fresh.1.max
        ));
    }

    /// Votes from new voters at a steady rate; for each, the time from its
    /// acknowledgement to the first WatchResults tally counting it.
    async fn measure_freshness(&mut self, vote: &Process, result: &Process) -> (u64, Latency) {
        let base = self.tally_total().await;
        let mut results = ResultServiceClient::connect(result.url())
            .await
            .expect("connecting to the result service");
        let mut stream = results
            .watch_results(WatchResultsRequest {})
            .await
            .expect("WatchResults")
            .into_inner();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
        let watcher = tokio::spawn(async move {
            while let Some(Ok(tally)) = stream.next().await {
                if seen_tx.send((tally.total, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let client = VoteServiceClient::connect(vote.url())
            .await
            .expect("connecting to the vote service");
        let rate = self.size.fresh_rate;
        let votes = rate * self.size.fresh_run.as_secs().max(1);
        let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let start = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..votes {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate as f64)).await;
            let (mut client, acked_tx) = (client.clone(), acked_tx.clone());
            calls.spawn(async move {
                let request = CastVoteRequest {
                    voter_id: format!("fresh-{n}"),
                    option: "a".into(),
                };
                if client.cast_vote(request).await.is_ok() {
                    let _ = acked_tx.send(Instant::now());
                }
            });
        }
        while calls.join_next().await.is_some() {}
        drop(acked_tx);
        let mut acks = Vec::new();
        while let Some(at) = acked_rx.recv().await {
            acks.push(at);
        }
        acks.sort();
        let acked = acks.len() as u64;
        *self.expected.entry("a".into()).or_default() += acked;
        let target = base + acked as i64;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.last().is_none_or(|(total, _)| *total < target) && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), seen_rx.recv()).await {
                Ok(Some(update)) => seen.push(update),
                _ => break,
            }
        }
        watcher.abort();
        let recorder = Recorder::new();
        for (k, acked_at) in acks.iter().enumerate() {
            let needed = base + k as i64 + 1;
            match seen.iter().find(|(total, _)| *total >= needed) {
                Some((_, at)) => {
                    recorder.record(0, at.saturating_duration_since(*acked_at), Ok(()))
                }
                None => recorder.record(
                    0,
                    Duration::ZERO,
                    Err(crate::target::CallFailure("never seen".into())),
                ),
            }
        }
        let (_, _, unseen) = recorder.counts();
        if unseen > 0 {
            self.problems.push(format!(
                "freshness: {unseen} acknowledged votes never appeared on WatchResults"
            ));
        }
        (acked, Latency::of(&recorder.latencies()))
    }
}
