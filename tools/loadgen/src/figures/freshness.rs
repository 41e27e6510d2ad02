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
    /// Writes the freshness table: one run per rate of the size.
    pub(super) async fn freshness(&mut self, vote: &Process, result: &Process) {
        let size = self.size.clone();
        self.line(format!(
            "\n## Freshness: vote acknowledged -> tally on WatchResults\n\n\
             New voters vote at a steady rate (open loop) for {:?}; a vote counts as seen \
             when a WatchResults tally first holds at least as many votes as had been \
             acknowledged with it.\n\n\
             | votes/s | votes | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|",
            size.fresh_run,
        ));
        for rate in size.fresh_rates {
            let (votes, latency) = self.measure_freshness(vote, result, rate).await;
            self.line(format!(
                "| {rate} | {votes} | {:.1} | {:.1} | {:.1} | {:.1} |",
                latency.p50, latency.p90, latency.p99, latency.max
            ));
            self.goals.freshness.push((rate, latency));
        }
    }

    /// Votes from new voters at a steady rate; for each, the time from its
    /// acknowledgement to the first WatchResults tally counting it.
    async fn measure_freshness(
        &mut self,
        vote: &Process,
        result: &Process,
        rate: u64,
    ) -> (u64, Latency) {
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
        let votes = rate * self.size.fresh_run.as_secs().max(1);
        // Each call's outcome: when it was acknowledged, or its status.
        let (acked_tx, mut acked_rx) =
            tokio::sync::mpsc::unbounded_channel::<Result<Instant, tonic::Code>>();
        let start = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..votes {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate as f64)).await;
            let (mut client, acked_tx) = (client.clone(), acked_tx.clone());
            calls.spawn(async move {
                let request = CastVoteRequest {
                    voter_id: format!("fresh{rate}-{n}"),
                    option: "a".into(),
                };
                let outcome = match client.cast_vote(request).await {
                    Ok(_) => Ok(Instant::now()),
                    Err(status) => Err(status.code()),
                };
                let _ = acked_tx.send(outcome);
            });
        }
        while calls.join_next().await.is_some() {}
        drop(acked_tx);
        let mut acks = Vec::new();
        let mut failed = std::collections::BTreeMap::<String, u64>::new();
        while let Some(outcome) = acked_rx.recv().await {
            match outcome {
                Ok(at) => acks.push(at),
                Err(code) => *failed.entry(format!("{code:?}")).or_default() += 1,
            }
        }
        if !failed.is_empty() {
            self.problems.push(format!(
                "freshness at {rate} votes/s: {} of {votes} CastVote calls failed: {failed:?}",
                failed.values().sum::<u64>()
            ));
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
