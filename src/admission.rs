//! Admission by waiting time, not by count: how a busy server decides
//! whether to take one more request. Every votemesh server (the gRPC
//! servers in [`crate::grpc`], the gateway) puts [`AdmissionLayer`] in
//! front of its handlers.
//!
//! ```text
//! request ─► a permit free (fewer than MAX_IN_FLIGHT in flight)? ─ yes ─► served
//!               │ no
//!               ├─ MAX_WAITING already waiting ─► refused at once
//!               └─ wait for a permit, at most
//!                    min(MAX_QUEUE_WAIT, half the caller's deadline), or
//!                    OVERLOADED_QUEUE_WAIT once the server is overloaded: no permit free
//!                    for OVERLOAD_AFTER, or for two tenths of it with the line growing
//!                    while it is served (until, over two tenths of it in a row, most
//!                    arrivals find a permit free),
//!                    and then only while fewer than MAX_IN_FLIGHT wait: else refused at once
//!                    (the gateway refuses those, and a full line's, at its door: refuse_at_door)
//!                     ├─ a permit came ─► served
//!                     └─ time is up   ─► refused
//! ```
//!
//! A fixed cap that sheds the moment it is reached (tower's `load_shed`
//! over a concurrency limit, what votemesh had before) turns every brief
//! stall into failed calls: a 300 ms pause (CFS throttling under a CPU
//! limit, a noisy neighbour, a garbage-collecting peer) at 3,000 calls/s
//! leaves 900 calls in flight when it ends, all of them answerable within
//! the next 100 ms. Here they wait instead, for at most a share of what
//! their caller is prepared to wait. Sustained overload is still refused
//! fast: once the server is overloaded, an arrival waits at most
//! [`DEFAULT_OVERLOADED_WAIT`], and only while fewer than `MAX_IN_FLIGHT`
//! wait; past that it is refused at once. The permits
//! stay busy; refusals come within milliseconds, and served requests are
//! not held behind a line. (A refusal still costs an HTTP or gRPC
//! exchange, which a server pays on the cores its served requests need:
//! docs/BENCHMARKS.md#refusals-cost-what-a-request-costs.)
//!
//! The server is overloaded once it has had no free permit for
//! [`DEFAULT_OVERLOAD_AFTER`] (longer than any stall worth absorbing), or
//! sooner, after [`GROWING_WINDOWS`] tenths of that, if in each of them no
//! permit was free, requests were served from the line, and yet more
//! arrived than were served: the line grew while the server worked. That
//! tells an overload from a stall, which these rules exist to absorb: in
//! a stall nothing is served and the line grows; once it ends the server
//! serves at full rate and the line shrinks. Only demand beyond what the
//! server can do grows the line while it is served. Seen only after
//! `OVERLOAD_AFTER`, the soak's 1.5 x filled the whole `MAX_WAITING` line
//! first, and the arrivals past it waited in the kernel's queues of a
//! saturated core before they were refused (refusal p99 106-282 ms,
//! docs/SOAK.md, the fourteenth run).
//!
//! The line that stood when overload began keeps the waits it was given
//! and is served: it is at most `MAX_WAITING` long, each request in it
//! bounded by its own budget, and with every arrival past the short line
//! refused it drains at the server's full rate (4,096 requests in half a
//! second at 8,000 a second). Until December 2026 that line was cut to
//! the overloaded wait when overload was declared (the "adaptive" queue
//! timeout of Facebook's RPC servers and of CoDel: a queue that never
//! empties is a standing queue, not a burst). That refused requests that
//! had already waited up to `OVERLOAD_AFTER`, the slowest refusals of
//! every overload (their p99 436 ms at 1.5 x, docs/SOAK.md, the
//! thirteenth run), and threw their work away at the moment the server
//! had least to spare.
//!
//! Overload ends once, over each of [`ENDING_WINDOWS`] tenths of
//! `OVERLOAD_AFTER` in a row (150 ms each by default), more arrivals
//! found a permit free than had to wait; not at the first permit found
//! free. On a saturated core a permit is free for an instant now and
//! then, and ending overload there gave every arrival its full wait
//! again, so a second-long line built up before overload was seen anew
//! (0.64 of capacity served at 1.5 x, docs/BENCHMARKS.md#soak). Nor once
//! nobody has waited for a while: when the load drops, the work the
//! overload left behind (a worker catching up) still makes some arrivals
//! wait, and 878 were refused in the 20 s after the load had fallen to
//! half (the same page). Nor after one such window: a saturated core
//! passes that test now and then in a sustained overload (a tenth of a
//! second in which admission saw a few dozen arrivals, the rest still in
//! the kernel's queues), and the arrivals of the next filled the whole
//! line before the overload was seen anew. Should an overload still end
//! too soon, a new one is seen like any other: meanwhile arrivals wait,
//! past `MAX_WAITING` they are refused at once, and the line is served
//! once the overload is seen. Until December 2026 an overload back within
//! two `OVERLOAD_AFTER`s of its end was seen after a tenth of it, which
//! spared a false end a second of full waits when the line was still cut;
//! with the line served, what it mostly did was refuse for half a second
//! when the load had just dropped, as the work the overload left behind
//! held every permit for 150 ms (about 2,000 votes refused at half
//! capacity in two of three runs, docs/SOAK.md, the fourteenth run).
//!
//! A permit is held until the handler has answered (a unary call's whole
//! work; a stream's, such as WatchResults or the gateway's SSE, only until
//! its head): streams never count against the limit.
//!
//! A refusal says how long to wait before retrying ([`Admission::retry_after`]):
//! the gateway answers 503 with `Retry-After`, a gRPC server UNAVAILABLE
//! with `grpc-retry-pushback-ms` (gRPC's retry design, A6: a client with a
//! retry policy waits that long before its retry). votemesh's own client
//! does not retry such a refusal at all ([`crate::client`]): its caller,
//! the gateway, hands it on as 503 with `Retry-After` to the browser, which
//! is the one to come back later. RESOURCE_EXHAUSTED stays what a full
//! queue answers, so an overloaded server and a full Redis are never
//! confused.
//!
//! The wait is bounded by the caller's deadline, not predicted from it:
//! an estimate of the line's speed made during a stall (when almost
//! nothing is answered) would refuse exactly the requests a stall should
//! only delay.
//!
//! Metrics: `votemesh_admission_waited_seconds` (requests that had to wait,
//! and how long), `votemesh_admission_refused_total{reason}`
//! (`overloaded`: refused while overloaded; `queue_full`; `wait_exceeded`:
//! a wait before overload ran out) and
//! `votemesh_admission_waiting`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use clap::{Args, builder::TypedValueParser};
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;

/// Requests a server handles at once per CPU it may use, before new ones
/// wait (the gateway and each gRPC server; not per connection). At
/// capacity a vote takes a few milliseconds, so a server needs tens in
/// flight to stay busy (Little's law: 9,000 votes/s × 5 ms ≈ 45 on two
/// cores). More only lengthens the line inside the server, where nothing
/// can refuse it: under 1.5 x overload on one core, 1,024 in flight served
/// 0.57 of capacity with a 1 s median, 256 served 0.59, 64 served 0.87
/// with a 112 ms median (docs/BENCHMARKS.md#soak).
pub const IN_FLIGHT_PER_CPU: usize = 32;
/// The default cap on requests in flight: [`IN_FLIGHT_PER_CPU`] × the CPUs
/// this process may use (`available_parallelism`, which reads a
/// container's CPU quota).
pub fn default_max_in_flight() -> usize {
    IN_FLIGHT_PER_CPU * std::thread::available_parallelism().map_or(1, |cpus| cpus.get())
}
/// Longest a request waits for a permit (less when half its deadline is
/// shorter).
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// How long the server may have had no free permit before it counts as
/// overloaded and refuses new requests without letting them wait: longer
/// than a stall worth absorbing, short enough that a real overload is
/// refused fast after a second and a half. Stalls come together: the
/// soak's 300 ms freezes, with a pause of the whole machine of 100-300 ms
/// and a burst of new connections on top, kept the gateway without a free
/// permit for just over one second now and then (1,001-1,004 ms each
/// time), and at 1 s each of those was taken for an overload that refused
/// the whole line: 8 episodes in 31 minutes of freezes every 5 s, none in
/// 14 minutes at 1.5 s (docs/SOAK.md, the tenth run).
pub const DEFAULT_OVERLOAD_AFTER: Duration = Duration::from_millis(1500);
/// Requests that may wait for a permit at once: the line's length bounds
/// the memory waiting requests hold, as the permits bound the running
/// ones'. It is what absorbs a stall: a 300 ms pause at 3,000 requests/s
/// lines up 900.
pub const DEFAULT_MAX_WAITING: usize = 4096;
/// How long a request may wait for a permit while the server is
/// overloaded: long enough that a permit coming free always finds a
/// request ready (the server stays busy at capacity), short enough that
/// refusals are fast and the served wait little.
pub const DEFAULT_OVERLOADED_WAIT: Duration = Duration::from_millis(5);
/// What a refusal asks the client to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The admission settings every server binary shares (flattened into
/// [`crate::component::ServerArgs`]).
#[derive(Args, Clone, Debug)]
pub struct AdmissionArgs {
    /// Requests handled at once before new ones wait for a permit.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = default_max_in_flight(), value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_in_flight: usize,
    /// Requests that may wait for a permit at once; more are refused.
    #[arg(long, env = "MAX_WAITING", default_value_t = DEFAULT_MAX_WAITING, value_parser = clap::value_parser!(u32).map(|n| n as usize))]
    pub max_waiting: usize,
    /// Longest a request waits for a permit, in milliseconds (a gRPC call
    /// waits at most half its deadline).
    #[arg(long, env = "MAX_QUEUE_WAIT_MS", default_value_t = DEFAULT_MAX_QUEUE_WAIT.as_millis() as u64)]
    pub max_queue_wait_ms: u64,
    /// Milliseconds without a free permit after which new requests are
    /// refused at once instead of waiting.
    #[arg(long, env = "OVERLOAD_AFTER_MS", default_value_t = DEFAULT_OVERLOAD_AFTER.as_millis() as u64)]
    pub overload_after_ms: u64,
    /// Longest a request waits for a permit once the server is overloaded,
    /// in milliseconds (0: refused at once).
    #[arg(long, env = "OVERLOADED_QUEUE_WAIT_MS", default_value_t = DEFAULT_OVERLOADED_WAIT.as_millis() as u64)]
    pub overloaded_queue_wait_ms: u64,
}

impl Default for AdmissionArgs {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            max_waiting: DEFAULT_MAX_WAITING,
            max_queue_wait_ms: DEFAULT_MAX_QUEUE_WAIT.as_millis() as u64,
            overload_after_ms: DEFAULT_OVERLOAD_AFTER.as_millis() as u64,
            overloaded_queue_wait_ms: DEFAULT_OVERLOADED_WAIT.as_millis() as u64,
        }
    }
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// No permit has been free for longer than the overload threshold.
    #[error("the server is overloaded")]
    Overloaded,
    /// [`DEFAULT_MAX_WAITING`] (or the configured number of) requests are already waiting.
    #[error("too many requests are waiting")]
    QueueFull,
    /// No permit came within the request's waiting budget.
    #[error("no capacity came free within {0:?}")]
    WaitExceeded(Duration),
}

impl Refusal {
    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::QueueFull => "queue_full",
            Self::WaitExceeded(_) => "wait_exceeded",
        }
    }
}

/// One server's admission control; clones share it.
#[derive(Clone, Debug)]
pub struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    max_waiting: usize,
    max_wait: Duration,
    overload_after: Duration,
    overloaded_wait: Duration,
    /// The window over which arrivals are counted (a tenth of
    /// `overload_after`).
    overload_window: Duration,
    /// Whether the server is overloaded: set once no permit has been free
    /// for `overload_after`, or for [`GROWING_WINDOWS`] windows in a row
    /// in which the line grew while it was served; cleared at the end of
    /// [`ENDING_WINDOWS`] windows in a row in which more arrivals found a
    /// permit free than had to wait.
    overloaded: AtomicBool,
    /// The current window's start (ms after `started`) and what it has
    /// counted so far: arrivals that found a permit free (counted only
    /// while overloaded), arrivals that found none, and requests served
    /// from the line (each one a permit handed on by a request that
    /// finished).
    window_started_ms: AtomicU64,
    window_found_free: AtomicU64,
    window_waited: AtomicU64,
    window_served_from_line: AtomicU64,
    /// Windows in a row, up to the last one closed, that tell the state
    /// should change: while not overloaded, windows in which the line grew
    /// while it was served and no permit was free ([`GROWING_WINDOWS`]);
    /// while overloaded, windows in which more arrivals found a permit
    /// free than had to wait ([`ENDING_WINDOWS`]).
    windows_in_a_row: AtomicU64,
    /// When the current (or last) overload began, ms after `started`.
    overload_since_ms: AtomicU64,
    /// Requests waiting for a permit now.
    waiting: AtomicUsize,
    /// The time base of `last_free_ms`.
    started: Instant,
    /// When a request last found a permit free (ms after `started`).
    last_free_ms: AtomicU64,
    waiting_gauge: metrics::Gauge,
    waited: metrics::Histogram,
    /// `votemesh_admission_refused_total`, by [`Refusal::reason`].
    refused_overloaded: metrics::Counter,
    refused_queue_full: metrics::Counter,
    refused_wait_exceeded: metrics::Counter,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(&AdmissionArgs::default())
    }
}

impl Admission {
    /// Admission with `args`' limits.
    pub fn new(args: &AdmissionArgs) -> Self {
        // Metric handles made before the recorder exists stay no-ops.
        crate::metrics::install();
        let max_in_flight = args.max_in_flight.max(1);
        Self {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                max_waiting: args.max_waiting,
                max_wait: Duration::from_millis(args.max_queue_wait_ms),
                overload_after: Duration::from_millis(args.overload_after_ms),
                overloaded_wait: Duration::from_millis(args.overloaded_queue_wait_ms),
                overload_window: Duration::from_millis(args.overload_after_ms / 10),
                overloaded: AtomicBool::new(false),
                window_started_ms: AtomicU64::new(0),
                window_found_free: AtomicU64::new(0),
                window_waited: AtomicU64::new(0),
                window_served_from_line: AtomicU64::new(0),
                windows_in_a_row: AtomicU64::new(0),
                overload_since_ms: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                started: Instant::now(),
                last_free_ms: AtomicU64::new(0),
                waiting_gauge: metrics::gauge!("votemesh_admission_waiting"),
                waited: metrics::histogram!("votemesh_admission_waited_seconds"),
                refused_overloaded: refused_counter(Refusal::Overloaded),
                refused_queue_full: refused_counter(Refusal::QueueFull),
                refused_wait_exceeded: refused_counter(Refusal::WaitExceeded(Duration::ZERO)),
            }),
        }
    }

    /// How long a refused client is asked to wait before retrying.
    pub fn retry_after(&self) -> Duration {
        RETRY_AFTER
    }

    /// Requests waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Requests in flight now (holding a permit).
    pub fn in_flight(&self) -> usize {
        self.shared.max_in_flight - self.shared.permits.available_permits()
    }

    /// Whether a request arriving now is refused at once, whatever it is,
    /// so that a server may refuse it before reading or recording it (the
    /// gateway's door): no permit is free and either the server is
    /// overloaded with its short line full, or the whole line
    /// (`MAX_WAITING`) is full. Counted (in the refusals and in the
    /// arrivals that decide when an overload ends) as [`Admission::admit`]
    /// counts the same refusal; `None` leaves the request to `admit`.
    pub fn refuse_at_door(&self) -> Option<Refusal> {
        let shared = &self.shared;
        if shared.permits.available_permits() > 0 {
            return None;
        }
        let refused_at_once = |overloaded: bool| {
            if overloaded && shared.overloaded_refuses_at_once() {
                Some(Refusal::Overloaded)
            } else if shared.waiting.load(Ordering::Relaxed) >= shared.max_waiting {
                Some(Refusal::QueueFull)
            } else {
                None
            }
        };
        // A look first, which changes nothing: most arrivals at a busy
        // server that is not overloaded go on to wait.
        refused_at_once(shared.overloaded.load(Ordering::Acquire))?;
        // Counted as an arrival that found no permit (it may declare the
        // overload). Should the line shorten in between, the request goes
        // on to `admit`, which counts it once more: one arrival in a
        // window of hundreds.
        let refusal = refused_at_once(shared.waiting_while_overloaded())?;
        shared.count_refusal(refusal);
        Some(refusal)
    }

    /// A permit for one request whose caller waits at most `deadline`
    /// (none known: [`DEFAULT_MAX_QUEUE_WAIT`] or the configured wait), or
    /// why there is none. Hold the permit until the request is answered.
    pub async fn admit(&self, deadline: Option<Duration>) -> Result<OwnedSemaphorePermit, Refusal> {
        let shared = &self.shared;
        if let Ok(permit) = shared.permits.clone().try_acquire_owned() {
            shared.found_free();
            return Ok(permit);
        }
        let refused = |refusal: Refusal| {
            shared.count_refusal(refusal);
            Err(refusal)
        };
        let overloaded = shared.waiting_while_overloaded();
        let mut budget = deadline.map_or(shared.max_wait, |deadline| {
            (deadline / 2).min(shared.max_wait)
        });
        if overloaded {
            budget = budget.min(shared.overloaded_wait);
            // `budget` is zero too when half the caller's deadline is.
            if budget.is_zero() || shared.overloaded_refuses_at_once() {
                return refused(Refusal::Overloaded);
            }
        }
        let Some(_waiting) = Waiting::enter(shared) else {
            return refused(Refusal::QueueFull);
        };
        let started = Instant::now();
        // A request keeps the wait it was given when it arrived: an
        // overload declared meanwhile changes the rule for arrivals, not
        // for the line (see the module's doc).
        match tokio::time::timeout(budget, shared.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                shared.waited.record(started.elapsed().as_secs_f64());
                shared
                    .window_served_from_line
                    .fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            // The semaphore is never closed; a closed one admits nothing.
            Ok(Err(_closed)) => refused(Refusal::WaitExceeded(budget)),
            Err(_elapsed) if overloaded => refused(Refusal::Overloaded),
            Err(_elapsed) => refused(Refusal::WaitExceeded(budget)),
        }
    }
}

fn refused_counter(refusal: Refusal) -> metrics::Counter {
    metrics::counter!("votemesh_admission_refused_total", "reason" => refusal.reason())
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn count_refusal(&self, refusal: Refusal) {
        match refusal {
            Refusal::Overloaded => &self.refused_overloaded,
            Refusal::QueueFull => &self.refused_queue_full,
            Refusal::WaitExceeded(_) => &self.refused_wait_exceeded,
        }
        .increment(1);
    }

    /// A request found a permit free.
    fn found_free(&self) {
        let now = self.now_ms();
        self.last_free_ms.fetch_max(now, Ordering::Relaxed);
        // Read first: a store on every admission would bounce the cache
        // line between cores for nothing.
        if self.overloaded.load(Ordering::Acquire) {
            self.window_found_free.fetch_add(1, Ordering::Relaxed);
            self.close_window(now);
        }
    }

    /// While overloaded: whether an arrival without a permit is refused
    /// at once, because it may not wait at all (`OVERLOADED_QUEUE_WAIT_MS`
    /// 0) or the line is as long as the permits. That line keeps every
    /// permit that comes free busy, and each request in it is served
    /// within about one request's time; past it, an arrival is refused at
    /// once, without a timer and a place among the semaphore's waiters,
    /// which cost the gateway about a quarter of a refusal (docs/SOAK.md,
    /// the thirteenth run). [`Admission::admit`] and
    /// [`Admission::refuse_at_door`] both decide by it.
    fn overloaded_refuses_at_once(&self) -> bool {
        self.overloaded_wait.is_zero() || self.waiting.load(Ordering::Relaxed) >= self.max_in_flight
    }

    /// A request found no permit free and is about to wait: whether the
    /// server is overloaded (it was, or it is seen to be now).
    fn waiting_while_overloaded(&self) -> bool {
        let now = self.now_ms();
        self.window_waited.fetch_add(1, Ordering::Relaxed);
        if self.overloaded.load(Ordering::Acquire) {
            self.close_window(now);
            // This arrival waits under the rule in force when it came.
            return true;
        }
        let last_free = self.last_free_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last_free) > self.overload_after.as_millis() as u64 {
            self.declare_overload(now, OverloadSeen::NoPermitFree);
            return true;
        }
        self.close_window(now)
    }

    /// Once the current window is over, closes it and starts the next
    /// (one arrival closes each window); returns whether the server is
    /// overloaded now.
    ///
    /// - While overloaded, the window counts towards the overload's end if
    ///   more of its arrivals found a permit free than had to wait;
    ///   [`ENDING_WINDOWS`] such windows in a row end it.
    /// - Otherwise the window counts towards an overload if no permit was
    ///   free in it, requests were served from the line (at least one per
    ///   permit: a stall serves none), and more arrived without a permit
    ///   than were served, by a twentieth or more: the line grew while
    ///   the server worked at full rate. [`GROWING_WINDOWS`] such windows
    ///   in a row are an overload. A stall's line grows with nothing
    ///   served, and shrinks once it ends, when the server serves at full
    ///   rate again; only demand above what the server can do makes a
    ///   line grow while it is served.
    fn close_window(&self, now: u64) -> bool {
        let overloaded = self.overloaded.load(Ordering::Acquire);
        let started = self.window_started_ms.load(Ordering::Relaxed);
        if now.saturating_sub(started) < self.overload_window.as_millis() as u64
            || self
                .window_started_ms
                .compare_exchange(started, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return overloaded;
        }
        let found_free = self.window_found_free.swap(0, Ordering::Relaxed);
        let waited = self.window_waited.swap(0, Ordering::Relaxed);
        let served = self.window_served_from_line.swap(0, Ordering::Relaxed);
        if overloaded {
            if found_free <= waited {
                self.windows_in_a_row.store(0, Ordering::Relaxed);
                return true;
            }
            if self.windows_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 < ENDING_WINDOWS {
                return true;
            }
            self.windows_in_a_row.store(0, Ordering::Relaxed);
            self.overloaded.store(false, Ordering::Release);
            tracing::info!(
                lasted_ms = now.saturating_sub(self.overload_since_ms.load(Ordering::Relaxed)),
                found_free,
                waited,
                "overload over: most arrivals found a permit free"
            );
            return false;
        }
        let no_permit_free = self.last_free_ms.load(Ordering::Relaxed) < started;
        let grew_while_served = served >= self.max_in_flight as u64 && waited * 20 >= served * 21;
        if !(no_permit_free && grew_while_served) {
            self.windows_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        if self.windows_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 < GROWING_WINDOWS {
            return false;
        }
        self.declare_overload(now, OverloadSeen::LineGrowing { waited, served });
        true
    }

    /// Marks the server overloaded from now (logged once per overload).
    fn declare_overload(&self, now: u64, seen: OverloadSeen) {
        // The first window is set before the flag is published: an arrival
        // that sees the flag must not close a window of the last overload.
        self.window_started_ms.store(now, Ordering::Relaxed);
        self.window_found_free.store(0, Ordering::Relaxed);
        self.window_waited.store(1, Ordering::Relaxed);
        self.window_served_from_line.store(0, Ordering::Relaxed);
        self.windows_in_a_row.store(0, Ordering::Relaxed);
        self.overload_since_ms.store(now, Ordering::Relaxed);
        if self.overloaded.swap(true, Ordering::AcqRel) {
            return;
        }
        // Once per overload: what an operator (or a soak run) needs to tell
        // an overload from a stall that outlasted OVERLOAD_AFTER.
        let no_permit_free_for_ms = now.saturating_sub(self.last_free_ms.load(Ordering::Relaxed));
        let in_flight = self.max_in_flight - self.permits.available_permits();
        let waiting = self.waiting.load(Ordering::Relaxed);
        let (last_window_waited, last_window_served) = match seen {
            OverloadSeen::NoPermitFree => (None, None),
            OverloadSeen::LineGrowing { waited, served } => (Some(waited), Some(served)),
        };
        tracing::warn!(
            seen = seen.as_str(),
            no_permit_free_for_ms,
            in_flight,
            waiting,
            last_window_waited,
            last_window_served,
            "overloaded: arrivals wait at most OVERLOADED_QUEUE_WAIT_MS, and only MAX_IN_FLIGHT of them, until most find a permit free"
        );
    }
}

/// Windows in a row (each a tenth of `OVERLOAD_AFTER`, 150 ms by default)
/// in which the line grew while it was served, no permit free, that make
/// an overload. The soak's 1.5 x is seen after 300-450 ms, about 3,500
/// waiting, instead of after `OVERLOAD_AFTER` with the whole
/// `MAX_WAITING` line full. With three windows the line was nearly full
/// when the overload was seen (4,065 waiting, 1,226 arrivals refused as
/// a full line); with two, none were in either of two runs, which served
/// 0.90 and 0.88 of capacity (docs/SOAK.md, the fifteenth run). One
/// window would take the window in which a stall ends (its line grown, a
/// permit's worth served) for an overload.
pub const GROWING_WINDOWS: u64 = 2;

/// Windows in a row (each a tenth of `OVERLOAD_AFTER`, 150 ms by default)
/// in which more arrivals found a permit free than had to wait, that end
/// an overload. One was enough until December 2026, and a saturated core
/// passes it now and then in the middle of an overload: a window in which
/// the server read only a few dozen arrivals, the rest still in the
/// kernel's queues, all of which found a permit free. The next one saw
/// thousands, too late: with the overload over they waited, the whole
/// `MAX_WAITING` line filled before it was seen again, and about 30,000
/// of the 416,000 refusals of a soak's 1.5 x came after more than 10 ms
/// (docs/SOAK.md, the sixteenth run). When the load really
/// drops, the second window costs the end 150 ms more, in which arrivals
/// that find a permit free are served as before.
pub const ENDING_WINDOWS: u64 = 2;

/// How an overload was seen.
#[derive(Clone, Copy, Debug)]
enum OverloadSeen {
    /// No permit was free for `OVERLOAD_AFTER`.
    NoPermitFree,
    /// The line grew while it was served for [`GROWING_WINDOWS`] windows
    /// in a row; the last window's arrivals without a permit and requests
    /// served from the line.
    LineGrowing { waited: u64, served: u64 },
}

impl OverloadSeen {
    fn as_str(self) -> &'static str {
        match self {
            Self::NoPermitFree => "no_permit_free_for_overload_after",
            Self::LineGrowing { .. } => "line_grew_while_served",
        }
    }
}

/// One request in the waiting line: counted while it waits.
struct Waiting<'a> {
    shared: &'a Shared,
}

impl<'a> Waiting<'a> {
    /// Joins the line, unless it is full.
    fn enter(shared: &'a Shared) -> Option<Self> {
        let before = shared.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= shared.max_waiting {
            shared.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        shared.waiting_gauge.increment(1.0);
        Some(Self { shared })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        self.shared.waiting_gauge.decrement(1.0);
    }
}

/// What a server answers a request it does not admit, and how it reads
/// the caller's deadline: the gRPC servers' and the gateway's differ.
pub trait Refuse<B>: Clone + Send + Sync + 'static {
    /// The deadline the caller gave `request`, if any.
    fn deadline(&self, request: &http::request::Parts) -> Option<Duration>;
    /// Whether `request` bypasses admission (health checks: a busy server
    /// is not a dead one).
    fn exempt(&self, _request: &http::request::Parts) -> bool {
        false
    }
    /// The answer to a refused request; the client should wait
    /// `retry_after` before trying again.
    fn refuse(&self, refusal: Refusal, retry_after: Duration) -> http::Response<B>;
}

/// Puts [`Admission`] in front of a service.
#[derive(Clone, Debug)]
pub struct AdmissionLayer<R> {
    admission: Admission,
    refuse: R,
}

impl<R> AdmissionLayer<R> {
    /// Admits through `admission`, refusing with `refuse`.
    pub fn new(admission: Admission, refuse: R) -> Self {
        Self { admission, refuse }
    }
}

impl<S, R: Clone> tower::Layer<S> for AdmissionLayer<R> {
    type Service = AdmissionService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
            refuse: self.refuse.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] makes.
#[derive(Clone, Debug)]
pub struct AdmissionService<S, R> {
    inner: S,
    admission: Admission,
    refuse: R,
}

impl<S, ReqBody, ResBody, R> tower::Service<http::Request<ReqBody>> for AdmissionService<S, R>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    R: Refuse<ResBody>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The service that was polled ready answers this request, and a
        // fresh clone stays for the next (tower's usual swap). The routers
        // behind this layer (tonic's, axum's) are always ready, so holding
        // one across the wait for a permit reserves nothing.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        if self.refuse.exempt(&parts) {
            return Box::pin(inner.call(http::Request::from_parts(parts, body)));
        }
        let deadline = self.refuse.deadline(&parts);
        let admission = self.admission.clone();
        let refuse = self.refuse.clone();
        Box::pin(async move {
            match admission.admit(deadline).await {
                Ok(permit) => {
                    let response = inner.call(http::Request::from_parts(parts, body)).await;
                    drop(permit);
                    response
                }
                Err(refusal) => Ok(refuse.refuse(refusal, admission.retry_after())),
            }
        })
    }
}
