//! Sustained: CastVote with the worker draining while votes arrive, next
//! to the no-op floor of the ingest figure; and how long the worker takes
//! to catch up once the load stops.

use std::time::Duration;

use super::{Load, Process, Suite, ratio};

impl Suite {
    /// Writes the sustained table; `floor` is the no-op server's calls/s
    /// at `c_mid` (from the ingest figure).
    pub(super) async fn sustained(&mut self, vote: &Process, c_mid: usize, floor: f64) {
        let size = self.size.clone();
        let worker = self.worker("bench-live").await;
        let sustained = self
            .load_metered(
                &format!("sustained c={c_mid}"),
                &[vote, &worker],
                Load::closed_loop(
                    "grpc",
                    vote.url(),
                    c_mid,
                    size.run,
                    size.voters,
                    "sustained".into(),
                ),
            )
            .await;
        self.counted(&sustained);
        let caught_up = self
            .wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;
        self.line(format!(
            "\n## Sustained: CastVote with the worker draining\n\n\
             | c | CastVote calls/s | p50 ms | p99 ms | no-op calls/s (above) | ratio | worker caught up after the run |\n\
             |---|---|---|---|---|---|---|\n\
             | {c_mid} | {:.0} | {:.2} | {:.2} | {floor:.0} | {:.2} | {:.2} s |",
            sustained.throughput,
            sustained.latency_ms.p50,
            sustained.latency_ms.p99,
            ratio(sustained.throughput, floor),
            caught_up.as_secs_f64()
        ));
        worker.stop().await;
    }
}
