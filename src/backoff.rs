//! How every votemesh loop waits before trying a failed dependency again:
//! exponential delays with jitter, without end, capped. The drain loop
//! uses it while Redis or Postgres is down, the gateway's results stream
//! while the result service is away, and the client retry layer between
//! attempts of a call. Jitter keeps many replicas (or calls) that failed
//! together from retrying in step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The first pause after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);

/// Endless delays growing from [`FIRST_DELAY`] to `max`, with jitter.
/// Start a fresh one after a success.
pub fn delays(max: Duration) -> impl Iterator<Item = Duration> + Send + use<> {
    delays_between(FIRST_DELAY, max)
}

/// Endless delays growing from `first` to `max`, with jitter: each pause
/// is drawn anew, so callers that failed together do not retry in step.
pub fn delays_between(
    first: Duration,
    max: Duration,
) -> impl Iterator<Item = Duration> + Send + use<> {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_never_end_and_stay_under_the_cap() {
        let max = Duration::from_millis(800);
        let pauses: Vec<Duration> = delays(max).take(50).collect();
        assert_eq!(pauses.len(), 50, "no end");
        // Jitter adds up to one more delay on top of the capped one.
        assert!(pauses.iter().all(|pause| *pause <= max * 2), "{pauses:?}");
        assert!(pauses[40] > pauses[0], "{pauses:?}");
    }
}
