//! Live results streams: what open results pages cost one gateway, and
//! how fresh they are (issue 23). Its own bench target,
//! `cargo bench -p votemesh-loadgen --bench streams`.
//!
//! ```text
//! this process: N raw SSE readers ──► gateway ◄── votemesh-loadgen --mode json --rate R
//!   every reader finds each tally's "total"; a sample also times it
//! ```
//!
//! The readers are cheap on purpose (a 1 KiB read buffer each, no HTTP
//! library), so the generator is not the bottleneck. Per vote rate, the
//! same load runs first with no stream open (the reference) and then with
//! the N streams: the gateway's extra CPU is what the streams cost. After
//! each run one more vote is cast and acknowledged; freshness is the time
//! from that acknowledgement to each sampled stream showing the final
//! total, and every stream must show it. Memory is the gateway's RSS growth
//! from before the streams opened to all of them open, per stream.
//!
//! The floor: the same readers then hold the same number of streams on a
//! bare server that writes one tally-sized event to each per interval and
//! does nothing else ([`crate::sse_floor`]); its CPU per event written is
//! what a write costs this machine, and the gateway's is read against it.
//! `BENCH_STREAMS` (default 10,000), `BENCH_STREAMS_SAMPLE` (200),
//! `BENCH_STREAMS_RATES` (`50,500,5000`) and `BENCH_STREAMS_SECONDS` (10)
//! set its size; the readers' process and the gateway hold one
//! descriptor per stream each, under this machine's hard open-file limit
//! of 20,000 per process.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use votemesh_testing::metrics;

use super::{Load, Process, Suite, cpu, kib};

/// The interval between two events on a stream, the gateway's default
/// `RESULTS_MIN_INTERVAL_MS` (set explicitly, so the floor uses the same):
/// with votes arriving at 50 a second or more, every interval has a
/// change, so each stream gets one event per interval.
const INTERVAL_MS: u64 = 200;

/// How big a streams run is.
#[derive(Clone, Debug)]
pub struct StreamsSize {
    /// Streams held open.
    pub streams: usize,
    /// Of them, how many time the final tally.
    pub sample: usize,
    /// Votes per second of each run.
    pub rates: Vec<u64>,
    /// Length of each run.
    pub run: Duration,
}

impl StreamsSize {
    /// The measured size, from `BENCH_STREAMS*` (see the module doc).
    pub fn from_env() -> Self {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(default)
        };
        let rates = std::env::var("BENCH_STREAMS_RATES")
            .ok()
            .map(|rates| {
                rates
                    .split(',')
                    .filter_map(|rate| rate.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_else(|| vec![50, 500, 5000]);
        Self {
            streams: env("BENCH_STREAMS", 10_000) as usize,
            sample: env("BENCH_STREAMS_SAMPLE", 200) as usize,
            rates,
            run: Duration::from_secs(env("BENCH_STREAMS_SECONDS", 10)),
        }
    }
}

/// What the readers share.
#[derive(Debug, Default)]
struct Readers {
    /// Streams that got their first tally.
    started: AtomicUsize,
    /// The total to watch for (0: none yet).
    target: AtomicI64,
    /// Streams that showed `target`.
    reached: AtomicUsize,
    /// When each sampled stream showed `target`.
    seen: Mutex<Vec<Instant>>,
    /// Answers other than 200, and streams that ended.
    failures: AtomicUsize,
    /// Set at the end: the readers stop.
    stop: AtomicBool,
}

/// One reader: opens the stream and reads it; for each tally, compares its
/// total with the target (and, when `timed`, notes when it reached it).
async fn read_stream(addr: SocketAddr, timed: bool, readers: Arc<Readers>) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        readers.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let head =
        b"GET /api/results/stream HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n\r\n";
    if stream.write_all(head).await.is_err() {
        readers.failures.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut buffer = [0u8; 1024];
    let mut filled = 0;
    let mut head_read = false;
    let mut started = false;
    let mut reached_target = 0;
    loop {
        let n = match stream.read(&mut buffer[filled..]).await {
            Ok(0) | Err(_) => {
                if !readers.stop.load(Ordering::Relaxed) {
                    readers.failures.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(n) => n,
        };
        filled += n;
        let text = &buffer[..filled];
        if !head_read {
            if !text.starts_with(b"HTTP/1.1 200") {
                readers.failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
            head_read = true;
        }
        // The last total in what was read; an event cut by the buffer's
        // end is kept for the next read.
        let mut last_total = None;
        let mut consumed = 0;
        let mut at = 0;
        while let Some(found) = find(&text[at..], b"\"total\":") {
            let start = at + found + 8;
            let digits = text[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if start + digits >= filled {
                break;
            }
            last_total = std::str::from_utf8(&text[start..start + digits])
                .ok()
                .and_then(|digits| digits.parse::<i64>().ok());
            at = start + digits;
            consumed = at;
        }
        if last_total.is_none() && filled == buffer.len() {
            consumed = filled;
        }
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
        let Some(total) = last_total else { continue };
        if !started {
            started = true;
            readers.started.fetch_add(1, Ordering::Relaxed);
        }
        let target = readers.target.load(Ordering::Relaxed);
        if target > 0 && total >= target && reached_target != target {
            reached_target = target;
            let now = Instant::now();
            readers.reached.fetch_add(1, Ordering::Relaxed);
            if timed && let Ok(mut seen) = readers.seen.lock() {
                seen.push(now);
            }
        }
    }
}

/// Opens `size.streams` readers on `addr`, a few hundred at a time, and
/// waits (at most two minutes) until each has its first tally or failed;
/// returns them and how many are open.
async fn open_streams(
    addr: SocketAddr,
    size: &StreamsSize,
    readers: &Arc<Readers>,
) -> (tokio::task::JoinSet<()>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    let every = (size.streams / size.sample.max(1)).max(1);
    for n in 0..size.streams {
        tasks.spawn(read_stream(addr, n % every == 0, readers.clone()));
        if n % 250 == 249 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while readers.started.load(Ordering::Relaxed) + readers.failures.load(Ordering::Relaxed)
        < size.streams
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (tasks, readers.started.load(Ordering::Relaxed))
}

/// What the floor measured.
struct Floor {
    /// Streams it held.
    open: usize,
    /// Its CPU, in cores.
    cores: f64,
    /// Its RSS growth per stream held, KiB: what a connection and a task
    /// cost with no HTTP library, the floor of the gateway's figure.
    kib_per_stream: f64,
}

/// CPU per event written, in µs: `cores` spent on `streams` streams that
/// each get one event per [`INTERVAL_MS`].
fn micros_per_event(cores: f64, streams: usize) -> f64 {
    let events_per_second = streams.max(1) as f64 * 1000.0 / INTERVAL_MS as f64;
    cores * 1e6 / events_per_second
}

/// Longer than the gateway's metrics flush (`pacing::METRICS_FLUSH`, 1 s).
const COUNTER_SETTLE: Duration = Duration::from_millis(1_500);

/// The gateway's `votemesh_results_events_written_total`, read from its
/// operator port at `admin`; `None` when it cannot be read.
async fn events_written(admin: SocketAddr) -> Option<u64> {
    let scrape = metrics::scrape(admin).await.ok()?;
    Some(metrics::value(&scrape, "votemesh_results_events_written_total", &[]) as u64)
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Casts one vote through the gateway's JSON API; true once acknowledged.
async fn vote_once(addr: SocketAddr, voter: &str) -> bool {
    let body = format!(r#"{{"option":"a","voter_id":"{voter}"}}"#);
    let request = format!(
        "POST /api/vote HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// The value below which `fraction` of `sorted` lies, in milliseconds.
fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

impl Suite {
    /// Runs the streams figure and returns the report's body and the
    /// problems seen.
    pub async fn streams(mut self, size: &StreamsSize) -> (String, Vec<String>) {
        let vote = self.vote().await;
        let result = self.result().await;
        let worker = self.worker("bench-streams").await;
        let max = size.streams + 100;
        // The operator port on a known address, to read the events the
        // streams wrote from the gateway's own counter.
        let admin = SocketAddr::from((
            [127, 0, 0, 1],
            votemesh_testing::free_port().await.expect("a free port"),
        ));
        let gateway = self
            .gateway_with(
                &vote,
                &result,
                &[
                    ("RESULTS_MAX_STREAMS", max.to_string()),
                    ("RESULTS_MIN_INTERVAL_MS", INTERVAL_MS.to_string()),
                    ("MAX_CONNECTIONS", (max + 1_000).to_string()),
                    ("GATEWAY_ADMIN_LISTEN_ADDR", admin.to_string()),
                ],
            )
            .await;
        let addr = gateway.addr;
        let (rss_fresh, _) = gateway.memory();
        let readers = Arc::new(Readers::default());
        let mut rows = Vec::new();
        let mut references = Vec::new();

        // The reference: each rate with no stream open.
        for &rate in &size.rates {
            let (cores, _) = self.vote_run(&gateway, rate, size.run, "ref").await;
            references.push(cores);
        }

        // The streams, opened a few hundred at a time.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss_before, _) = gateway.memory();
        let (mut tasks, open) = open_streams(addr, size, &readers).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss_open, _) = gateway.memory();
        let per_stream_kib = rss_open.saturating_sub(rss_before) as f64 / open.max(1) as f64;
        // The reference runs leave the allocator holding some memory, which
        // the streams may reuse: counted from the fresh gateway instead,
        // the figure is an upper bound.
        let per_stream_kib_fresh = rss_open.saturating_sub(rss_fresh) as f64 / open.max(1) as f64;

        for (&rate, reference) in size.rates.iter().zip(&references) {
            // The gateway moves the streams' counts into its metrics once a
            // second: read before and after, each past a flush.
            tokio::time::sleep(COUNTER_SETTLE).await;
            let written_before = events_written(admin).await;
            let (cores, final_total) = self.vote_run(&gateway, rate, size.run, "streams").await;
            tokio::time::sleep(COUNTER_SETTLE).await;
            let written = events_written(admin)
                .await
                .zip(written_before)
                .map(|(after, before)| after.saturating_sub(before));
            // The final vote, and who shows it when.
            let target = final_total + 1;
            readers.target.store(target, Ordering::SeqCst);
            if let Ok(mut seen) = readers.seen.lock() {
                seen.clear();
            }
            readers.reached.store(0, Ordering::SeqCst);
            let voter = format!("streams-final-{rate}");
            let acked = vote_once(addr, &voter).await;
            let acked_at = Instant::now();
            if acked {
                *self.expected.entry("a".into()).or_default() += 1;
            } else {
                self.problems
                    .push(format!("streams: the final vote at {rate}/s failed"));
            }
            let deadline = acked_at + Duration::from_secs(30);
            while readers.reached.load(Ordering::SeqCst) < open && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let reached = readers.reached.load(Ordering::SeqCst);
            if reached < open {
                self.problems.push(format!(
                    "streams: at {rate}/s, {reached} of {open} streams showed the final tally within 30 s"
                ));
            }
            let mut fresh: Vec<Duration> = readers
                .seen
                .lock()
                .map(|seen| {
                    seen.iter()
                        .map(|at| at.saturating_duration_since(acked_at))
                        .collect()
                })
                .unwrap_or_default();
            fresh.sort();
            let extra = (cores - reference).max(0.0);
            let counted = match written {
                Some(written) if written > 0 => format!(
                    "{:.1} ({:.0}/s)",
                    extra * size.run.as_secs_f64() * 1e6 / written as f64,
                    written as f64 / size.run.as_secs_f64(),
                ),
                _ => {
                    self.problems.push(format!(
                        "streams: at {rate}/s the gateway's written events could not be read"
                    ));
                    "-".to_owned()
                }
            };
            rows.push(format!(
                "| {rate} | {reference:.2} | {cores:.2} | {extra:.3} | {:.4} | {:.1} | {counted} | {reached} of {open} | {:.0} | {:.0} | {:.0} |",
                extra / (open.max(1) as f64 / 1000.0),
                micros_per_event(extra, open),
                percentile_ms(&fresh, 0.5),
                percentile_ms(&fresh, 0.99),
                percentile_ms(&fresh, 1.0),
            ));
        }
        readers.stop.store(true, Ordering::SeqCst);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let failures = readers.failures.load(Ordering::Relaxed);
        if failures > 0 {
            self.problems.push(format!(
                "streams: {failures} streams refused or ended early"
            ));
        }
        let floor = self.floor(size).await;
        self.wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;
        self.check_counts().await;

        self.line(format!(
            "\n## Live results streams\n\n\
             {open} streams held open on one gateway (`RESULTS_MAX_STREAMS` {max}, \
             `RESULTS_MIN_INTERVAL_MS` default) by cheap readers in the bench's process \
             ({} of them time the final tally); votes through the gateway's JSON API \
             (`votemesh-loadgen --mode json --rate R`) for {:?} per rate, first with no \
             stream open (the reference), then with the streams. One more vote is cast \
             after each run; freshness is the time from its acknowledgement to a sampled \
             stream showing it.\n\n\
             Gateway memory: {} before, {} with the streams open: **{:.1} KiB per stream** \
             ({} when the gateway started, before the reference runs: {:.1} KiB per stream \
             counted from there, an upper bound).\n\n\
             | votes/s | gateway cores, no streams | with the streams | streams' cores | cores per 1,000 streams | µs per event written | µs per event counted (events/s) | streams that showed the final tally | p50 ms | p99 ms | max ms |\n\
             |---|---|---|---|---|---|---|---|---|---|---|",
            size.sample.min(open),
            size.run,
            kib(rss_before),
            kib(rss_open),
            per_stream_kib,
            kib(rss_fresh),
            per_stream_kib_fresh,
        ));
        for row in rows {
            self.line(row);
        }
        self.line(format!(
            "\nµs per event written: the streams' cores over the events a second they wrote, \
             one per stream per {INTERVAL_MS} ms; counted: over the events the gateway's \
             `votemesh_results_events_written_total` says it wrote during the run (read a \
             flush after it: a stream that could not write skips a tally, so fewer). The floor, the same readers on {} bare streams \
             getting one event per {INTERVAL_MS} ms and nothing else (`votemesh-loadgen \
             --sse-floor-server`), for {:?}: **{:.3} cores, {:.1} µs per event written, \
             {:.1} KiB per stream**.",
            floor.open,
            size.run,
            floor.cores,
            micros_per_event(floor.cores, floor.open),
            floor.kib_per_stream,
        ));
        for process in [gateway, worker, vote, result] {
            process.stop().await;
        }
        (self.report, self.problems)
    }

    /// The floor's run: the bare SSE server ([`crate::sse_floor`]) holding
    /// `size.streams` streams for `size.run`, metered.
    async fn floor(&mut self, size: &StreamsSize) -> Floor {
        let server = self
            .floor_server(
                "sse-floor",
                "LOADGEN_SSE_FLOOR_SERVER",
                &[("SSE_FLOOR_INTERVAL_MS", INTERVAL_MS.to_string())],
            )
            .await;
        let readers = Arc::new(Readers::default());
        let (rss_before, _) = server.memory();
        let (mut tasks, open) = open_streams(server.addr, size, &readers).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss_open, _) = server.memory();
        let kib_per_stream = rss_open.saturating_sub(rss_before) as f64 / open.max(1) as f64;
        let meter = cpu::Meter::start(server.cpu_group().into_iter().collect());
        tokio::time::sleep(size.run).await;
        let cost = meter.stop();
        let cores = cost.cores("sse-floor");
        readers.stop.store(true, Ordering::SeqCst);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let failures = readers.failures.load(Ordering::Relaxed);
        if failures > 0 || open < size.streams {
            self.problems.push(format!(
                "streams: the floor held {open} of {} streams ({failures} failed)",
                size.streams
            ));
        }
        server.stop().await;
        Floor {
            open,
            cores,
            kib_per_stream,
        }
    }

    /// Votes at `rate` for `run` through `gateway`'s JSON API (new voters);
    /// the gateway's CPU in cores, and the tally's total after it (every
    /// acknowledged vote counted).
    async fn vote_run(
        &mut self,
        gateway: &Process,
        rate: u64,
        run: Duration,
        prefix: &str,
    ) -> (f64, i64) {
        let groups: Vec<cpu::Group> = gateway.cpu_group().into_iter().collect();
        let meter = cpu::Meter::start(groups);
        let summary = self
            .load(Load {
                mode: "json",
                address: gateway.url(),
                concurrency: 64,
                run: Some(run),
                count: None,
                rate: Some(rate as f64),
                voters: rate * run.as_secs().max(1) * 2,
                prefix: format!("streams-{prefix}-{rate}"),
            })
            .await;
        let cost = meter.stop();
        self.counted(&summary);
        (cost.cores("gateway"), self.expected_total())
    }
}
