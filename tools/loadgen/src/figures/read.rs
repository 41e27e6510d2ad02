//! Read: GetResults by 16 callers against a small and a large number of
//! stored votes (seeded straight into PostgreSQL with `generate_series`),
//! which the maintained tally keeps at the same cost.

use std::time::Duration;

use crate::summary::Latency;

use super::{Load, Process, Suite, ratio};

impl Suite {
    /// Writes the read table.
    pub(super) async fn read(&mut self, result: &Process) {
        let size = self.size.clone();
        self.line(
            "\n## Read: GetResults against the number of stored votes\n\n\
             Votes seeded straight into PostgreSQL with `generate_series` (the tally \
             recomputed from them); 16 callers for the run's length.\n\n\
             | stored votes | calls/s | p50 ms | p99 ms | ratio to the small store |\n|---|---|---|---|---|",
        );
        let mut small = None;
        for stored in size.read_votes {
            self.seed(stored).await;
            let (rps, latency) = self.get_results_load(result, size.run).await;
            let base = *small.get_or_insert(rps);
            self.line(format!(
                "| {stored} | {rps:.0} | {:.2} | {:.2} | {:.2} |",
                latency.p50,
                latency.p99,
                ratio(rps, base)
            ));
        }
    }

    /// Makes the store hold `stored` votes (seeded voters `seed-<n>`) and
    /// the tally match the votes table.
    async fn seed(&self, stored: u64) {
        let have = self.sql_i64("SELECT COUNT(*)::bigint FROM votes").await as u64;
        if stored > have {
            let offset = self
                .sql_i64("SELECT COUNT(*)::bigint FROM votes WHERE voter_id LIKE 'seed-%'")
                .await;
            self.sql(&format!(
                "INSERT INTO votes (voter_id, option_id, vote_id, sequence, cast_at, counted_at) \
                 SELECT 'seed-' || g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, gen_random_uuid(), g, now(), now() \
                 FROM generate_series({}, {}) AS g",
                offset + 1,
                offset + (stored - have) as i64
            ))
            .await;
        }
        // Recomputed whole, into shard 0's rows (no worker runs now): the
        // sum per option is what the result service reads.
        self.sql(
            "BEGIN; DELETE FROM tally; \
             INSERT INTO tally (option_id, shard, count) \
             SELECT option_id, 0, COUNT(*) FROM votes GROUP BY option_id; COMMIT",
        )
        .await;
        self.sql("ANALYZE votes").await;
    }

    /// GetResults by 16 callers for `run`, through the load generator.
    async fn get_results_load(&mut self, result: &Process, run: Duration) -> (f64, Latency) {
        let summary = self
            .load(Load::closed_loop(
                "results",
                result.url(),
                16,
                run,
                16,
                "read".into(),
            ))
            .await;
        (summary.throughput, summary.latency_ms)
    }
}
