//! What a run measured: counts, throughput, latency percentiles, failures
//! by kind, the run second by second and the tally the acknowledged votes
//! add up to; printed as text for people and as JSON (`--json`) for the
//! benchmark suite.

use std::{collections::BTreeMap, fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::recorder::{Recorder, Second};

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// One second of a run: the calls due in it (sent in it, in a closed
/// loop), whenever they were answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SecondOfRun {
    /// Acknowledged.
    pub ok: u64,
    /// The slowest acknowledged, ms.
    pub ok_max_ms: f64,
    /// Failed.
    pub failed: u64,
    /// Failed after more than [`crate::recorder::SLOW_FAILURE`] (10 ms).
    pub failed_slow: u64,
    /// The slowest failed, ms.
    pub failed_max_ms: f64,
}

impl From<&Second> for SecondOfRun {
    fn from(second: &Second) -> Self {
        Self {
            ok: second.ok,
            ok_max_ms: second.ok_max_micros as f64 / 1000.0,
            failed: second.failed,
            failed_slow: second.failed_slow,
            failed_max_ms: second.failed_max_micros as f64 / 1000.0,
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// `grpc`, `form` or `json`.
    pub mode: String,
    /// The address driven.
    pub target: String,
    /// `closed` (fixed concurrency) or `open` (fixed rate).
    pub pace: String,
    /// Callers, in a closed loop.
    pub concurrency: Option<usize>,
    /// Intended calls per second, in an open loop.
    pub rate: Option<f64>,
    /// Simulated voters.
    pub voters: u64,
    /// From the first call sent to the last answered.
    pub seconds: f64,
    /// Calls sent.
    pub sent: u64,
    /// Calls acknowledged.
    pub ok: u64,
    /// Calls failed.
    pub failed: u64,
    /// Failures by kind (`UNAVAILABLE`, `HTTP 503: the gateway is busy (the server is overloaded)`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Acknowledged calls per second.
    pub throughput: f64,
    /// Latency of acknowledged calls; in an open loop from the moment each
    /// call was due, so a stall counts for every call it delayed.
    pub latency_ms: Latency,
    /// Latency of failed calls, measured alike: how fast a refusal came.
    #[serde(default)]
    pub failed_latency_ms: Option<Latency>,
    /// Second by second, from the run's start: when the slow answers and
    /// the failures came.
    #[serde(default)]
    pub timeline: Vec<SecondOfRun>,
    /// Per option id, voters whose last acknowledged vote chose it: the
    /// tally once the worker has counted everything.
    pub expected_tally: BTreeMap<String, u64>,
}

/// How a run was paced, for the summary.
#[derive(Clone, Copy, Debug)]
pub enum PaceLabel {
    /// `c` callers.
    Closed(usize),
    /// `rate` calls per second.
    Open(f64),
}

impl Summary {
    /// The summary of a finished run.
    pub fn new(
        mode: &str,
        target: &str,
        pace: PaceLabel,
        voters: &crate::voters::Voters,
        recorder: &Recorder,
        elapsed: Duration,
    ) -> Self {
        let (sent, ok, failed) = recorder.counts();
        let seconds = elapsed.as_secs_f64();
        let (pace, concurrency, rate) = match pace {
            PaceLabel::Closed(c) => ("closed", Some(c), None),
            PaceLabel::Open(r) => ("open", None, Some(r)),
        };
        Self {
            mode: mode.to_owned(),
            target: target.to_owned(),
            pace: pace.to_owned(),
            concurrency,
            rate,
            voters: voters.count(),
            seconds,
            sent,
            ok,
            failed,
            failures: recorder.failures(),
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&recorder.latencies()),
            failed_latency_ms: {
                let failed = recorder.failed_latencies();
                (!failed.is_empty()).then(|| Latency::of(&failed))
            },
            timeline: recorder.timeline().iter().map(SecondOfRun::from).collect(),
            expected_tally: voters.expected_tally().into_iter().collect(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pace = match (self.concurrency, self.rate) {
            (Some(c), _) => format!("closed loop, {c} callers"),
            (_, Some(r)) => format!("open loop, {r} calls/s"),
            _ => self.pace.clone(),
        };
        writeln!(
            f,
            "{} votes to {} ({pace}, {} voters) for {:.2} s",
            self.mode, self.target, self.voters, self.seconds
        )?;
        writeln!(
            f,
            "  sent {}  ok {}  failed {}  throughput {:.0}/s",
            self.sent, self.ok, self.failed, self.throughput
        )?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.max, l.mean
        )?;
        for (kind, count) in &self.failures {
            writeln!(f, "  failed: {kind} x{count}")?;
        }
        let tally: Vec<String> = self
            .expected_tally
            .iter()
            .map(|(option, count)| format!("{option}={count}"))
            .collect();
        write!(f, "  acknowledged votes add up to: {}", tally.join(" "))
    }
}
