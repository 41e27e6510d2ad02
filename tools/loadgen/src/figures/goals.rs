//! CPU per vote, each part against its floor (issue 21's goals): the
//! table at the top of the report, read from the CPU each process spent
//! in the other figures' runs (`cpu`) and from the floors measured in the
//! same run.
//!
//! ```text
//! ingest c=64 ─────► Redis µs per queued vote   vs pipelined LPUSH of the same size (redis-benchmark -P 16)
//!             ─────► vote service µs per call    vs the no-op VoteService, same generator
//! gateway json/form ► gateway µs per vote        vs the vote service it calls, and the gateway floor
//! sustained c=64 ──► worker + PostgreSQL + Redis vs the same in a full-backlog drain
//! drain, 1 worker ─► worker + PostgreSQL + Redis per vote, votes/s
//! freshness ───────► p99 at each rate;  footprint ─► idle RSS
//! ```
//!
//! CPU time per vote drifts far less than throughput on a shared machine,
//! and both sides of each ratio come from the same run.

use std::fmt::Write as _;

use crate::summary::Latency;

use super::{Suite, cpu::Cost};

/// The most Redis may spend per queued vote, in pipelined LPUSHes.
const REDIS_GOAL: f64 = 3.0;
/// The most the vote service may spend per CastVote, in no-op calls.
const VOTE_GOAL: f64 = 1.5;
/// The most the gateway may spend per vote, in the vote service's CPU for it.
const GATEWAY_GOAL: f64 = 1.0;
/// The most the worker path may spend per vote under a steady load, in
/// full-backlog drains.
const TRICKLE_GOAL: f64 = 1.5;
/// The most one drained vote may cost worker, PostgreSQL and Redis together.
const DRAIN_GOAL_US: f64 = 15.0;
/// Votes a second one worker must drain.
const DRAIN_GOAL_RATE: f64 = 100_000.0;
/// The freshness p99 every measured rate must stay under.
const FRESHNESS_GOAL_MS: f64 = 50.0;
/// The most idle RSS a service may hold.
const IDLE_RSS_GOAL_KIB: u64 = 15 * 1024;

/// What the goals need besides the CPU of the metered runs.
#[derive(Debug, Default)]
pub(super) struct Inputs {
    /// Bytes of one queued vote, as the vote service pushed it.
    pub(super) queued_vote_bytes: Option<u64>,
    /// Redis CPU per pipelined LPUSH of that size, µs.
    pub(super) lpush_floor_us: Option<f64>,
    /// Idle RSS by service, KiB.
    pub(super) idle_rss: Vec<(String, u64)>,
    /// Freshness at each rate measured.
    pub(super) freshness: Vec<(u64, Latency)>,
}

/// One row: what, its goal, the measured value, its floor, the ratio.
struct Row {
    part: String,
    goal: String,
    measured: String,
    floor: String,
    ratio: Option<f64>,
    met: bool,
}

impl Suite {
    /// A metered run's cost: calls answered, calls/s and CPU by process.
    fn metered(&self, label: &str) -> Option<(u64, f64, &Cost)> {
        self.costs
            .iter()
            .find(|(name, ..)| name == label)
            .map(|(_, calls, throughput, cost)| (*calls, *throughput, cost))
    }

    /// µs per call of `groups` summed, in the run `label`.
    fn per_call(&self, label: &str, groups: &[&str]) -> Option<f64> {
        let (calls, _, cost) = self.metered(label)?;
        let found: Vec<f64> = groups
            .iter()
            .filter_map(|group| cost.per_thousand(group, calls))
            .collect();
        (!found.is_empty()).then(|| found.iter().sum())
    }

    /// The worker groups of the run `label` (their names start with `bench-`).
    fn workers_of(&self, label: &str) -> Vec<String> {
        self.metered(label)
            .map(|(_, _, cost)| {
                cost.by_group
                    .iter()
                    .map(|(name, _)| name.clone())
                    .filter(|name| name.starts_with("bench-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The goals table, as Markdown, for the top of the report.
    pub(super) fn goals_section(&self, c_mid: usize) -> String {
        let mut rows = Vec::new();
        let ingest = format!("ingest c={c_mid}");
        let noop = format!("no-op c={c_mid}");

        if let (Some(redis), Some(floor)) = (
            self.per_call(&ingest, &["redis"]),
            self.goals.lpush_floor_us,
        ) {
            let size = self
                .goals
                .queued_vote_bytes
                .map_or(String::new(), |bytes| format!(" of {bytes} B"));
            rows.push(Row::ratio(
                format!("Redis, per queued vote (CastVote c={c_mid}, worker paused)"),
                REDIS_GOAL,
                redis,
                floor,
                format!("pipelined `LPUSH`{size} (`redis-benchmark -P 16`), per push"),
            ));
        }
        if let (Some(vote), Some(floor)) = (
            self.per_call(&ingest, &["vote"]),
            self.per_call(&noop, &["noop"]),
        ) {
            rows.push(Row::ratio(
                format!("vote service, per CastVote (c={c_mid})"),
                VOTE_GOAL,
                vote,
                floor,
                "the no-op VoteService through the same generator".into(),
            ));
        }
        for mode in ["json", "form"] {
            let run = format!("gateway {mode}");
            let floor_run = format!("gateway floor {mode}");
            let (Some(gateway), Some(vote)) = (
                self.per_call(&run, &["gateway"]),
                self.per_call(&run, &["vote"]),
            ) else {
                continue;
            };
            let floor = match (
                self.per_call(&floor_run, &["gateway-floor"]),
                self.per_call(&floor_run, &["vote"]),
            ) {
                (Some(floor), Some(floor_vote)) => format!(
                    "; the gateway floor (hyper and tonic alone) {floor:.1} µs against its vote \
                     service's {floor_vote:.1}: {:.2}",
                    floor / floor_vote
                ),
                _ => String::new(),
            };
            rows.push(Row::ratio(
                format!("gateway, per {} vote (c={c_mid})", mode.to_uppercase()),
                GATEWAY_GOAL,
                gateway,
                vote,
                format!("the vote service it calls, same run{floor}"),
            ));
        }
        let sustained = format!("sustained c={c_mid}");
        let drain = "drain, 1 worker(s)";
        let worker_path = |suite: &Self, label: &str| {
            let workers = suite.workers_of(label);
            let mut groups: Vec<&str> = workers.iter().map(String::as_str).collect();
            groups.push("postgres");
            suite.per_call(label, &groups)
        };
        if let (Some(steady), Some(push_redis), Some(steady_redis), Some(backlog)) = (
            worker_path(self, &sustained),
            self.per_call(&ingest, &["redis"]),
            self.per_call(&sustained, &["redis"]),
            worker_path(self, drain).zip(self.per_call(drain, &["redis"])),
        ) {
            // Redis also takes the pushes in the sustained run: its share
            // for the worker is what it spent beyond the ingest's per vote.
            let steady = steady + (steady_redis - push_redis).max(0.0);
            let backlog = backlog.0 + backlog.1;
            rows.push(Row::ratio(
                format!(
                    "worker path under a steady load (sustained c={c_mid}): worker + PostgreSQL \
                     + Redis beyond the ingest's share"
                ),
                TRICKLE_GOAL,
                steady,
                backlog,
                "the same in a full-backlog drain, one worker".into(),
            ));
        }
        if let (Some(cost), Some((_, rate, _))) = (
            worker_path(self, drain).zip(self.per_call(drain, &["redis"])),
            self.metered(drain),
        ) {
            let per_vote = cost.0 + cost.1;
            rows.push(Row {
                part: "drain, one worker: worker + PostgreSQL + Redis".into(),
                goal: format!("≤ {DRAIN_GOAL_US:.0} µs a vote, ≥ {DRAIN_GOAL_RATE:.0} votes/s"),
                measured: format!("{per_vote:.1} µs, {rate:.0} votes/s"),
                floor: "-".into(),
                ratio: None,
                met: per_vote <= DRAIN_GOAL_US && rate >= DRAIN_GOAL_RATE,
            });
        }
        for (rate, latency) in &self.goals.freshness {
            rows.push(Row {
                part: format!("freshness at {rate} votes/s: ack → WatchResults, p99"),
                goal: format!("< {FRESHNESS_GOAL_MS:.0} ms"),
                measured: format!("{:.1} ms", latency.p99),
                floor: "-".into(),
                ratio: None,
                met: latency.p99 < FRESHNESS_GOAL_MS,
            });
        }
        for (name, rss) in &self.goals.idle_rss {
            rows.push(Row {
                part: format!("idle RSS, {name}"),
                goal: format!("≤ {} MiB", IDLE_RSS_GOAL_KIB / 1024),
                measured: super::kib(*rss),
                floor: "-".into(),
                ratio: None,
                met: *rss <= IDLE_RSS_GOAL_KIB,
            });
        }

        let mut text = String::from(
            "## CPU per vote, against each part's floor\n\n\
             Issue 21's goals. CPU time (user + system, from `/proc`) each process spent in \
             the runs below, per vote, next to the floor for the same work measured in this \
             run. The ratio is the goal; the µs move with the machine's speed, the ratios \
             much less.\n\n\
             | part | goal | measured | floor, same run | ratio | met |\n|---|---|---|---|---|---|\n",
        );
        for row in rows {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {} |",
                row.part,
                row.goal,
                row.measured,
                row.floor,
                row.ratio.map_or("-".into(), |ratio| format!("{ratio:.2}")),
                if row.met { "yes" } else { "**no**" }
            );
        }
        text
    }
}

impl Row {
    /// A row whose goal is `measured` at most `goal` times `floor`.
    fn ratio(part: String, goal: f64, measured: f64, floor: f64, floor_is: String) -> Self {
        let ratio = super::ratio(measured, floor);
        Self {
            part,
            goal: format!("≤ {goal:.1}x its floor"),
            measured: format!("{measured:.1} µs"),
            floor: format!("{floor:.1} µs: {floor_is}"),
            ratio: Some(ratio),
            met: floor > 0.0 && ratio <= goal,
        }
    }
}
