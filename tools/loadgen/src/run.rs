//! The two ways of pacing calls, and the progress line.
//!
//! - Closed loop: `c` callers, each sending its next vote when the last
//!   one is answered. Caller `w` owns voters `w, w+c, w+2c, ...`, so no
//!   voter ever has two votes in flight and the expected tally is exact.
//! - Open loop: calls are due at a fixed rate whatever the answers do;
//!   latency is measured from when each call was due, not when it could be
//!   sent, so a stall counts against every call it held up (no
//!   coordinated omission). At most `max_in_flight` calls are outstanding;
//!   beyond that calls wait, and their wait counts in their latency.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{recorder::Recorder, target::Target, voters::Voters};

/// How calls are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// A fixed number of callers.
    Closed {
        /// Callers.
        concurrency: usize,
    },
    /// A fixed rate.
    Open {
        /// Calls per second.
        rate: f64,
        /// Most calls outstanding at once.
        max_in_flight: usize,
    },
}

/// When a run ends (whichever comes first, with the shutdown token).
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many calls.
    Count(u64),
    /// Only at shutdown.
    Never,
}

/// How progress is shown on stderr.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Not at all.
    Off,
    /// One line rewritten every second (a terminal).
    Live,
    /// One line every so often (a log).
    Every(Duration),
}

impl Progress {
    /// [`Progress::Live`] on a terminal, else a line every `every` (none if zero).
    pub fn for_stderr(every: Duration) -> Self {
        if std::io::stderr().is_terminal() {
            Self::Live
        } else if every.is_zero() {
            Self::Off
        } else {
            Self::Every(every)
        }
    }
}

/// Runs load against `target` until `stop` or `shutdown`; returns what was
/// recorded and how long it took (first call to last answer).
pub async fn run(
    target: Target,
    voters: Arc<Voters>,
    pace: Pace,
    stop: Stop,
    progress: Progress,
    shutdown: CancellationToken,
) -> (Arc<Recorder>, Duration) {
    let recorder = Arc::new(Recorder::new());
    let started = Instant::now();
    let finished = CancellationToken::new();
    let reporter = tokio::spawn(report_progress(
        recorder.clone(),
        progress,
        started,
        finished.clone(),
    ));
    let deadline = match stop {
        Stop::After(duration) => Some(started + duration),
        _ => None,
    };
    let limit = match stop {
        Stop::Count(count) => Some(count),
        _ => None,
    };
    match pace {
        Pace::Closed { concurrency } => {
            closed(
                &target,
                &voters,
                &recorder,
                concurrency,
                deadline,
                limit,
                &shutdown,
            )
            .await;
        }
        Pace::Open {
            rate,
            max_in_flight,
        } => {
            let open = Open {
                rate,
                max_in_flight,
                deadline,
                limit,
            };
            open.run(&target, &voters, &recorder, &shutdown).await;
        }
    }
    let elapsed = started.elapsed();
    finished.cancel();
    let _ = reporter.await;
    (recorder, elapsed)
}

async fn closed(
    target: &Target,
    voters: &Arc<Voters>,
    recorder: &Arc<Recorder>,
    concurrency: usize,
    deadline: Option<Instant>,
    limit: Option<u64>,
    shutdown: &CancellationToken,
) {
    let concurrency = concurrency.clamp(1, voters.count().max(1) as usize) as u64;
    let issued = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for caller in 0..concurrency {
        let (target, voters, recorder, issued, shutdown) = (
            target.clone(),
            voters.clone(),
            recorder.clone(),
            issued.clone(),
            shutdown.clone(),
        );
        // This caller's voters: caller, caller + c, caller + 2c, ...
        let owned = (voters.count() - caller).div_ceil(concurrency);
        callers.spawn(async move {
            let mut turn = 0u64;
            loop {
                if shutdown.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if limit.is_some_and(|limit| issued.fetch_add(1, Ordering::Relaxed) >= limit) {
                    break;
                }
                let voter = caller + (turn % owned) * concurrency;
                let ballot = voters.ballot(voter, turn / owned);
                turn += 1;
                recorder.sent();
                let sent_at = Instant::now();
                let slot = caller as usize;
                let outcome = target
                    .cast(slot, &ballot.voter_id, voters.option_id(ballot.option))
                    .await;
                if outcome.is_ok() {
                    voters.acknowledged(&ballot);
                }
                recorder.record(slot, sent_at.elapsed(), outcome);
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

/// The open loop's settings.
struct Open {
    rate: f64,
    max_in_flight: usize,
    deadline: Option<Instant>,
    limit: Option<u64>,
}

impl Open {
    async fn run(
        &self,
        target: &Target,
        voters: &Arc<Voters>,
        recorder: &Arc<Recorder>,
        shutdown: &CancellationToken,
    ) {
        let rate = self.rate.max(f64::MIN_POSITIVE);
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let mut calls = JoinSet::new();
        let start = Instant::now();
        let due_at = |call: u64| start + Duration::from_secs_f64(call as f64 / rate);
        let mut next = 0u64;
        'schedule: loop {
            if self.limit.is_some_and(|limit| next >= limit) {
                break;
            }
            let due = due_at(next);
            if self.deadline.is_some_and(|deadline| due >= deadline) {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break 'schedule,
                () = tokio::time::sleep_until(due) => {}
            }
            // Send every call that is due by now (timers tick in
            // milliseconds; a high rate sends several per tick).
            let now = Instant::now();
            while due_at(next) <= now
                && self.limit.is_none_or(|limit| next < limit)
                && self.deadline.is_none_or(|deadline| due_at(next) < deadline)
            {
                let intended = due_at(next);
                let permit = tokio::select! {
                    () = shutdown.cancelled() => break 'schedule,
                    permit = in_flight.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break 'schedule,
                    },
                };
                let call = next;
                next += 1;
                let (target, voters, recorder) = (target.clone(), voters.clone(), recorder.clone());
                calls.spawn(async move {
                    let _permit = permit;
                    let ballot = voters.ballot(call % voters.count(), call / voters.count());
                    recorder.sent();
                    let slot = call as usize;
                    let outcome = target
                        .cast(slot, &ballot.voter_id, voters.option_id(ballot.option))
                        .await;
                    if outcome.is_ok() {
                        voters.acknowledged(&ballot);
                    }
                    recorder.record(slot, intended.elapsed(), outcome);
                });
            }
            while calls.try_join_next().is_some() {}
        }
        while calls.join_next().await.is_some() {}
    }
}

async fn report_progress(
    recorder: Arc<Recorder>,
    progress: Progress,
    started: Instant,
    finished: CancellationToken,
) {
    let every = match progress {
        Progress::Off => return,
        Progress::Live => Duration::from_secs(1),
        Progress::Every(every) => every,
    };
    let mut ticks = tokio::time::interval_at(started + every, every);
    let mut last = (started, 0u64);
    loop {
        tokio::select! {
            () = finished.cancelled() => break,
            now = ticks.tick() => {
                let (sent, ok, failed) = recorder.counts();
                let rate = (ok - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, ok);
                let line = format!(
                    "[{:>6.1}s] sent {sent}  ok {ok}  failed {failed}  {rate:.0}/s now",
                    (now - started).as_secs_f64()
                );
                let mut stderr = std::io::stderr().lock();
                let _ = match progress {
                    Progress::Live => write!(stderr, "\r\x1b[2K{line}"),
                    _ => writeln!(stderr, "{line}"),
                };
                let _ = stderr.flush();
            }
        }
    }
    if matches!(progress, Progress::Live) {
        let _ = writeln!(std::io::stderr());
    }
}
