//! Counts: every vote the services acknowledged is counted exactly once
//! (votes acknowledged == rows in `votes` == the tally, option by option).

use std::collections::BTreeMap;

use super::Suite;

impl Suite {
    /// Checks votes acknowledged == rows in `votes` == the tally, per option.
    pub(super) async fn check_counts(&mut self) {
        let rows = self.sql_i64("SELECT COUNT(*)::bigint FROM votes").await;
        let total = self.tally_total().await;
        let mut tally = BTreeMap::new();
        let mut stored = BTreeMap::new();
        for option in self.expected.keys() {
            let counted = self
                .sql_i64(&format!(
                    "SELECT COALESCE(SUM(count), 0)::bigint FROM tally WHERE option_id = '{option}'"
                ))
                .await;
            tally.insert(option.clone(), counted as u64);
            let rows = self
                .sql_i64(&format!(
                    "SELECT COUNT(*)::bigint FROM votes WHERE option_id = '{option}'"
                ))
                .await;
            stored.insert(option.clone(), rows as u64);
        }
        let expected_total = self.expected_total();
        let exact = rows == expected_total
            && total == expected_total
            && tally == self.expected
            && stored == self.expected;
        if !exact {
            self.problems.push(format!(
                "counts differ: acknowledged (last vote per voter) {:?} (total {expected_total}), \
                 tally {tally:?} (total {total}), votes rows {stored:?} (total {rows})",
                self.expected
            ));
        }
        let line = format!(
            "\n## Counts\n\nEvery counted run's voters, last acknowledged vote each: {expected_total} \
             ({:?}); rows in `votes`: {rows}; tally total: {total} ({tally:?}). {}",
            self.expected,
            if exact { "Exact." } else { "**NOT exact.**" }
        );
        self.line(line);
    }
}
