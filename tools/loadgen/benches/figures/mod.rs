//! The benchmark suite, shared by `cargo bench -p votemesh-loadgen` (full
//! size, writes `docs/BENCHMARKS.md`) and the smoke test (tiny size, checks
//! counts, never timings).
//!
//! One run starts a throwaway redis-server and PostgreSQL (the
//! `votemesh-testing` harness), the services' binaries of the same build
//! profile as processes, and the no-op VoteService
//! (`votemesh-loadgen --noop-server`); it drives them with the
//! `votemesh-loadgen` binary (`--json`) and puts each figure next to its
//! ceiling measured in the same run:
//!
//! ```text
//! ingest     CastVote, worker paused, c=1/16/64/256   vs no-op server, same generator; vs redis-benchmark
//! sustained  CastVote, worker draining, c=64          vs no-op server
//! drain      N queued votes from M voters, 1 and 2 workers -> Postgres; Redis memory before/after
//! gateway    form and JSON vote, c=64                 vs CastVote direct, c=64
//! freshness  ack -> WatchResults at a steady rate
//! read       GetResults at a small and a large number of stored votes (seeded with generate_series)
//! footprint  binary sizes, idle and peak RSS from /proc
//! ```
//!
//! Where a figure falls short of its floor, the CPU each process spent
//! during the run says why ([`cpu`]).
//!
//! Every counted vote is checked at the end: votes acknowledged by the
//! services == rows in `votes` == the tally's total, option by option.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

mod cpu;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::process::{Child, Command};
use tokio_stream::StreamExt;
use votemesh::{
    proto::v1::{
        CastVoteRequest, WatchResultsRequest, result_service_client::ResultServiceClient,
        vote_service_client::VoteServiceClient,
    },
    store,
};
use votemesh_loadgen::{recorder::Recorder, summary::Latency, summary::Summary};
use votemesh_testing::{PostgresServer, RedisServer, free_port};

/// How big a run is.
#[derive(Clone, Debug)]
pub struct Size {
    /// Length of each timed load run.
    pub run: Duration,
    /// Closed-loop concurrencies of the ingest figure.
    pub concurrencies: Vec<usize>,
    /// Voters of the ingest, sustained and gateway runs.
    pub voters: u64,
    /// Votes queued for the drain figure.
    pub drain_votes: u64,
    /// Voters they come from.
    pub drain_voters: u64,
    /// Requests per redis-benchmark run.
    pub redis_requests: u64,
    /// Stored votes of the two read figures.
    pub read_votes: [u64; 2],
    /// Votes per second of the freshness figure.
    pub fresh_rate: u64,
    /// Its length.
    pub fresh_run: Duration,
}

impl Size {
    /// The full suite; `BENCH_DRAIN_VOTES`, `BENCH_DRAIN_VOTERS`,
    /// `BENCH_READ_VOTES` and `BENCH_SECONDS` change its size.
    pub fn full() -> Self {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(default)
        };
        Self {
            run: Duration::from_secs(env("BENCH_SECONDS", 5)),
            concurrencies: vec![1, 16, 64, 256],
            voters: 100_000,
            drain_votes: env("BENCH_DRAIN_VOTES", 1_000_000),
            drain_voters: env("BENCH_DRAIN_VOTERS", 100_000),
            redis_requests: 200_000,
            read_votes: [10_000, env("BENCH_READ_VOTES", 10_000_000)],
            fresh_rate: 1_000,
            fresh_run: Duration::from_secs(env("BENCH_SECONDS", 5) * 2),
        }
    }

    /// A few seconds in all: checks that everything works and counts.
    pub fn smoke() -> Self {
        Self {
            run: Duration::from_millis(300),
            concurrencies: vec![1, 16],
            voters: 1_000,
            drain_votes: 2_000,
            drain_voters: 500,
            redis_requests: 2_000,
            read_votes: [1_000, 5_000],
            fresh_rate: 100,
            fresh_run: Duration::from_secs(1),
        }
    }
}

/// Where the binaries are: `BENCH_BIN_DIR`, else the directory of the
/// running bench or test (`target/<profile>/deps`)'s parent, where cargo
/// puts the workspace's binaries of the same profile.
pub fn binaries_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

/// The binaries the suite runs: the services and the load generator.
pub const BINARIES: [&str; 5] = [
    "votemesh-vote",
    "votemesh-worker",
    "votemesh-result",
    "votemesh-gateway",
    "votemesh-loadgen",
];

/// Builds the [`BINARIES`] with cargo (release or dev) unless
/// `only_if_missing` and they are all there.
pub async fn build_services(release: bool, only_if_missing: bool) {
    let dir = binaries_dir();
    if only_if_missing && BINARIES.iter().all(|bin| dir.join(bin).is_file()) {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--bins"]);
    if release {
        command.arg("--release");
    }
    for package in BINARIES {
        command.args(["-p", package]);
    }
    eprintln!("building the binaries: {command:?}");
    let status = command
        .status()
        .await
        .unwrap_or_else(|error| panic!("cannot run cargo: {error}"));
    assert!(status.success(), "building the services failed");
}

/// A service or no-op server running as a child process.
struct Process {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Process {
    async fn start(binary: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let port = free_port().await.expect("a free port");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = Command::new(binary);
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value.replace("{addr}", &addr.to_string()));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Self {
            name: name.to_owned(),
            addr,
            child,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This process, as a group the CPU meter reads.
    fn cpu_group(&self) -> Option<cpu::Group> {
        cpu::Group::one(&self.name, self.child.id())
    }

    /// Waits until gRPC readiness (`""`) is SERVING, or the port answers
    /// (the no-op server and the gateway have no gRPC health).
    async fn ready(self, grpc_health: bool) -> Self {
        let addr = self.addr;
        let name = self.name.clone();
        votemesh_testing::wait_for(
            &format!("{name} ready"),
            Duration::from_secs(60),
            || async move {
                if grpc_health {
                    votemesh_testing::probe::health(addr, "").await
                        == Ok(tonic_health::pb::health_check_response::ServingStatus::Serving)
                } else {
                    tokio::net::TcpStream::connect(addr).await.is_ok()
                }
            },
        )
        .await;
        self
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then wait for the exit (a worker finishes its batch).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) only sends a signal.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One load-generator run's settings.
struct Load<'a> {
    mode: &'a str,
    address: String,
    concurrency: usize,
    run: Option<Duration>,
    count: Option<u64>,
    voters: u64,
    prefix: String,
}

impl<'a> Load<'a> {
    /// A closed loop of `concurrency` callers for `run`: `voters` voters
    /// named `<prefix>-<n>`, by `mode` at `address`.
    fn closed_loop(
        mode: &'a str,
        address: String,
        concurrency: usize,
        run: Duration,
        voters: u64,
        prefix: String,
    ) -> Self {
        Self {
            mode,
            address,
            concurrency,
            run: Some(run),
            count: None,
            voters,
            prefix,
        }
    }
}

/// Everything one run needs, and what it found.
pub struct Suite {
    size: Size,
    dir: PathBuf,
    redis: RedisServer,
    postgres: PostgresServer,
    db: DatabaseConnection,
    /// Per option, the votes that must be counted (from counted runs).
    expected: BTreeMap<String, u64>,
    /// The report, section by section.
    report: String,
    /// Checks that failed (counts that do not add up).
    problems: Vec<String>,
    /// The CPU cost of the runs measured for "Where the CPU goes".
    costs: Vec<(String, u64, f64, cpu::Cost)>,
}

impl Suite {
    /// Starts Redis and PostgreSQL (migrated).
    pub async fn start(size: Size) -> Self {
        let redis = RedisServer::start().await.expect("redis-server");
        let postgres = PostgresServer::start().await.expect("postgres");
        let db = store::connect(&postgres.url())
            .await
            .expect("connecting to postgres");
        store::migrate(&db).await.expect("migrating");
        Self {
            size,
            dir: binaries_dir(),
            redis,
            postgres,
            db,
            expected: BTreeMap::new(),
            report: String::new(),
            problems: Vec::new(),
            costs: Vec::new(),
        }
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    async fn vote(&self) -> Process {
        Process::start(
            &self.bin("votemesh-vote"),
            "vote",
            &[
                ("VOTE_LISTEN_ADDR", "{addr}".into()),
                ("REDIS_URL", self.redis.url().expose().to_owned()),
            ],
        )
        .await
        .ready(true)
        .await
    }

    async fn worker(&self, id: &str) -> Process {
        Process::start(
            &self.bin("votemesh-worker"),
            id,
            &[
                ("WORKER_LISTEN_ADDR", "{addr}".into()),
                ("WORKER_ID", id.to_owned()),
                ("REDIS_URL", self.redis.url().expose().to_owned()),
                ("DATABASE_URL", self.postgres.url().expose().to_owned()),
            ],
        )
        .await
        .ready(true)
        .await
    }

    async fn result(&self) -> Process {
        Process::start(
            &self.bin("votemesh-result"),
            "result",
            &[
                ("RESULT_LISTEN_ADDR", "{addr}".into()),
                ("DATABASE_URL", self.postgres.url().expose().to_owned()),
            ],
        )
        .await
        .ready(true)
        .await
    }

    async fn gateway(&self, vote: &Process, result: &Process) -> Process {
        Process::start(
            &self.bin("votemesh-gateway"),
            "gateway",
            &[
                ("GATEWAY_LISTEN_ADDR", "{addr}".into()),
                ("VOTE_ADDR", vote.url()),
                ("RESULT_ADDR", result.url()),
            ],
        )
        .await
        .ready(false)
        .await
    }

    async fn noop(&self) -> Process {
        Process::start(
            &self.bin("votemesh-loadgen"),
            "noop",
            &[
                ("LOADGEN_NOOP_SERVER", "true".into()),
                ("NOOP_LISTEN_ADDR", "{addr}".into()),
            ],
        )
        .await
        .ready(false)
        .await
    }

    /// Runs `votemesh-loadgen --json` and reads its summary.
    async fn load(&mut self, load: Load<'_>) -> Summary {
        let mut command = Command::new(self.bin("votemesh-loadgen"));
        command
            .args(["--json", "--progress-every", "0", "--change", "0.1"])
            .args(["--mode", load.mode])
            .args(["--voters", &load.voters.to_string()])
            .args(["--voter-prefix", &load.prefix])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command.arg(match load.mode {
            "grpc" => "--vote-addr",
            "results" => "--result-addr",
            _ => "--gateway-url",
        });
        command.arg(&load.address);
        command.args(["-c", &load.concurrency.to_string()]);
        if let Some(run) = load.run {
            command.args(["-d", &format!("{}ms", run.as_millis())]);
        }
        if let Some(count) = load.count {
            command.args(["-n", &count.to_string()]);
        }
        let output = command
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run votemesh-loadgen: {error}"));
        assert!(
            output.status.success(),
            "votemesh-loadgen {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Summary = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "votemesh-loadgen printed no summary ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        if summary.failed > 0 {
            self.problems.push(format!(
                "{} {} (prefix {}): {} calls failed: {:?}",
                load.mode, load.address, load.prefix, summary.failed, summary.failures
            ));
        }
        summary
    }

    /// [`Self::load`], with the CPU time of `processes` (and of Redis and
    /// PostgreSQL) recorded under `label` for "Where the CPU goes".
    async fn load_metered(
        &mut self,
        label: &str,
        processes: &[&Process],
        load: Load<'_>,
    ) -> Summary {
        let mut groups: Vec<cpu::Group> = processes.iter().filter_map(|p| p.cpu_group()).collect();
        groups.extend(cpu::Group::one("redis", self.redis.pid()));
        groups.extend(cpu::Group::tree("postgres", self.postgres.pid()));
        let meter = cpu::Meter::start(groups);
        let summary = self.load(load).await;
        let cost = meter.stop();
        self.costs
            .push((label.to_owned(), summary.ok, summary.throughput, cost));
        summary
    }

    /// The "Where the CPU goes" section: each metered run's CPU time per
    /// call, by process.
    fn cpu_section(&mut self) {
        let costs = std::mem::take(&mut self.costs);
        self.line(
            "\n## Where the CPU goes\n\n\
             CPU time (user + system, from `/proc/<pid>/stat`; the generator's from \
             `getrusage`) each process spent during the run, in µs per answered call. \
             When the busy cores are near the machine's count, throughput is the cores \
             divided by the total: a figure below its floor costs more CPU per call, and \
             the column that grew says which process to profile.\n",
        );
        self.line("| run | calls/s | busy cores | loadgen | vote / no-op | gateway | redis | worker | postgres | total µs/call |");
        self.line("|---|---|---|---|---|---|---|---|---|---|");
        for (label, calls, throughput, cost) in &costs {
            let cell = |names: &[&str]| {
                let found: Vec<f64> = names
                    .iter()
                    .filter_map(|name| cost.per_thousand(name, *calls))
                    .collect();
                if found.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{:.1}", found.iter().sum::<f64>())
                }
            };
            let worker_names: Vec<String> = cost
                .by_group
                .iter()
                .map(|(name, _)| name.clone())
                .filter(|name| name.starts_with("bench-"))
                .collect();
            let worker_names: Vec<&str> = worker_names.iter().map(String::as_str).collect();
            let line = format!(
                "| {label} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} |",
                throughput,
                cost.busy_cores(),
                cell(&["loadgen"]),
                cell(&["vote", "noop"]),
                cell(&["gateway"]),
                cell(&["redis"]),
                cell(&worker_names),
                cell(&["postgres"]),
                cost.total_per_thousand(*calls),
            );
            self.line(line);
        }
    }

    /// Adds a counted run's acknowledged votes to what the tally must hold.
    fn counted(&mut self, summary: &Summary) {
        for (option, count) in &summary.expected_tally {
            *self.expected.entry(option.clone()).or_default() += count;
        }
    }

    async fn sql_i64(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .unwrap_or_else(|| panic!("{sql}: no row"));
        row.try_get_by_index::<i64>(0)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    async fn sql(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    async fn tally_total(&self) -> i64 {
        self.sql_i64("SELECT COALESCE(SUM(count), 0)::bigint FROM tally")
            .await
    }

    async fn redis_i64(&self, words: &[&str]) -> i64 {
        let reply = self.redis.command(words).await.expect("redis command");
        reply
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{words:?} answered {reply:?}"))
    }

    async fn redis_used_memory(&self) -> u64 {
        let info = self.redis.command(&["INFO", "memory"]).await.expect("INFO");
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the queue is empty and the tally's total is `total`.
    async fn wait_counted(&self, total: i64, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.tally_total().await >= total && self.redis_i64(&["LLEN", "votes"]).await == 0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "the tally did not reach {total} within {within:?} (it holds {})",
                self.tally_total().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn expected_total(&self) -> i64 {
        self.expected.values().sum::<u64>() as i64
    }

    fn line(&mut self, text: impl AsRef<str>) {
        self.report.push_str(text.as_ref());
        self.report.push('\n');
    }

    /// Runs every figure and returns the report's body (Markdown).
    pub async fn run(mut self) -> (String, Vec<String>) {
        let size = self.size.clone();
        let idle_redis = self.redis_used_memory().await;
        let vote = self.vote().await;
        let result = self.result().await;
        let noop = self.noop().await;
        let idle = [&vote, &result].map(|p| (p.name.clone(), p.memory().0));
        let worker = self.worker("bench-idle").await;
        let idle_worker = worker.memory().0;
        worker.stop().await;

        // Ingest: worker paused, the queue emptied between runs.
        self.line("## Ingest: CastVote with the worker paused\n");
        self.line(format!(
            "Closed loop for {:?} per run, {} voters, 4 HTTP/2 connections. The no-op server is \
             `votemesh-loadgen --noop-server` (a bare tonic VoteService answering at once) \
             driven by the same generator; `redis-benchmark` runs `EVAL` of one `LPUSH` of a \
             vote-sized message at the same concurrency (the cheapest Redis round trip a \
             CastVote needs).\n",
            size.run, size.voters
        ));
        self.line("| c | CastVote calls/s | p50 ms | p99 ms | max ms | no-op calls/s | no-op p99 ms | ratio to no-op | redis-benchmark EVAL LPUSH req/s | ratio to Redis |");
        self.line("|---|---|---|---|---|---|---|---|---|---|");
        // The middle concurrency (64 at full size) is the one the
        // sustained, drain and gateway figures use, against its floor.
        let c_mid = if size.concurrencies.contains(&64) {
            64
        } else {
            size.concurrencies.last().copied().unwrap_or(1)
        };
        let mut floor_mid = 0.0;
        for &c in &size.concurrencies {
            let real = self
                .load_metered(
                    &format!("ingest c={c}"),
                    &[&vote],
                    Load::closed_loop(
                        "grpc",
                        vote.url(),
                        c,
                        size.run,
                        size.voters,
                        format!("ingest-{c}"),
                    ),
                )
                .await;
            self.redis
                .command(&["DEL", "votes"])
                .await
                .expect("DEL votes");
            let floor = self
                .load_metered(
                    &format!("no-op c={c}"),
                    &[&noop],
                    Load::closed_loop(
                        "grpc",
                        noop.url(),
                        c,
                        size.run,
                        size.voters,
                        format!("noop-{c}"),
                    ),
                )
                .await;
            let redis_rps = self.redis_benchmark(c).await;
            self.line(format!(
                "| {c} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
                real.throughput,
                real.latency_ms.p50,
                real.latency_ms.p99,
                real.latency_ms.max,
                floor.throughput,
                floor.latency_ms.p99,
                ratio(real.throughput, floor.throughput),
                redis_rps,
                ratio(real.throughput, redis_rps),
            ));
            if c == c_mid {
                floor_mid = floor.throughput;
            }
        }

        // Sustained: the worker drains while votes arrive.
        let worker = self.worker("bench-live").await;
        let sustained = self
            .load_metered(
                &format!("sustained c={c_mid}"),
                &[&vote, &worker],
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
        let floor = floor_mid;
        self.line(format!(
            "\n## Sustained: CastVote with the worker draining\n\n\
             | c | CastVote calls/s | p50 ms | p99 ms | no-op calls/s (above) | ratio | worker caught up after the run |\n|---|---|---|---|---|---|---|\n\
             | {c_mid} | {:.0} | {:.2} | {:.2} | {floor:.0} | {:.2} | {:.2} s |",
            sustained.throughput,
            sustained.latency_ms.p50,
            sustained.latency_ms.p99,
            ratio(sustained.throughput, floor),
            caught_up.as_secs_f64()
        ));
        worker.stop().await;

        // Drain: a backlog into Postgres, with 1 and 2 workers.
        self.line(format!(
            "\n## Drain: {} queued votes from {} voters into PostgreSQL\n\n\
             Queued through the vote service (worker stopped), then timed from the workers' \
             start until the queue is empty and the tally holds every voter.\n\n\
             | workers | seconds | votes/s | Redis used_memory before queueing | after the drain | peak worker RSS |\n|---|---|---|---|---|---|",
            size.drain_votes, size.drain_voters
        ));
        let mut worker_peak = 0;
        for workers in [1usize, 2] {
            let before = self.redis_used_memory().await;
            let queued = self
                .load(Load {
                    mode: "grpc",
                    address: vote.url(),
                    concurrency: c_mid,
                    run: None,
                    count: Some(size.drain_votes),
                    voters: size.drain_voters,
                    prefix: format!("drain{workers}"),
                })
                .await;
            self.counted(&queued);
            let meter = cpu::Meter::start(
                cpu::Group::one("redis", self.redis.pid())
                    .into_iter()
                    .chain(cpu::Group::tree("postgres", self.postgres.pid()))
                    .collect(),
            );
            let started = Instant::now();
            let mut running = Vec::new();
            for n in 0..workers {
                running.push(self.worker(&format!("bench-drain{workers}-{n}")).await);
            }
            self.wait_counted(self.expected_total(), Duration::from_secs(1800))
                .await;
            let seconds = started.elapsed().as_secs_f64();
            let mut cost = meter.stop();
            // The workers started inside the timed run: all their CPU time.
            for worker in &running {
                if let Some(group) = worker.cpu_group() {
                    cost.add(&group.name, group.cpu());
                }
            }
            self.costs.push((
                format!("drain, {workers} worker(s)"),
                queued.ok,
                queued.ok as f64 / seconds,
                cost,
            ));
            let peak = running.iter().map(|w| w.memory().1).max().unwrap_or(0);
            worker_peak = worker_peak.max(peak);
            for worker in running {
                worker.stop().await;
            }
            let after = self.redis_used_memory().await;
            self.line(format!(
                "| {workers} | {seconds:.2} | {:.0} | {} | {} | {} |",
                queued.ok as f64 / seconds,
                mib(before),
                mib(after),
                kib(peak)
            ));
        }

        // Gateway: the full path, worker draining.
        let worker = self.worker("bench-live").await;
        let gateway = self.gateway(&vote, &result).await;
        self.line(format!(
            "\n## Gateway: HTTP votes vs CastVote direct (worker draining)\n\n\
             Closed loop, c={c_mid}, {:?} each; the HTTP modes use one HTTP/1.1 connection per caller.\n\n\
             | route | votes/s | p50 ms | p99 ms | failed | ratio to CastVote direct |\n|---|---|---|---|---|---|",
            size.run
        ));
        let direct = self
            .load_metered(
                "gateway run: CastVote direct",
                &[&vote, &worker],
                Load::closed_loop(
                    "grpc",
                    vote.url(),
                    c_mid,
                    size.run,
                    size.voters,
                    "direct".into(),
                ),
            )
            .await;
        self.counted(&direct);
        for mode in ["grpc", "form", "json"] {
            let summary = if mode == "grpc" {
                direct.clone()
            } else {
                let summary = self
                    .load_metered(
                        &format!("gateway {mode}"),
                        &[&gateway, &vote, &worker],
                        Load::closed_loop(
                            mode,
                            gateway.url(),
                            c_mid,
                            size.run,
                            size.voters,
                            format!("gateway-{mode}"),
                        ),
                    )
                    .await;
                self.counted(&summary);
                summary
            };
            let route = match mode {
                "grpc" => "CastVote (gRPC, direct)",
                "form" => "gateway `POST /vote` (form)",
                _ => "gateway `POST /api/vote` (JSON)",
            };
            self.line(format!(
                "| {route} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
                summary.throughput,
                summary.latency_ms.p50,
                summary.latency_ms.p99,
                summary.failed,
                ratio(summary.throughput, direct.throughput)
            ));
        }
        self.cpu_section();
        let loaded = [&vote, &result, &gateway].map(|p| (p.name.clone(), p.memory()));
        self.wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;

        // Freshness: ack -> WatchResults.
        let fresh = self.freshness(&vote, &result).await;
        self.line(format!(
            "\n## Freshness: vote acknowledged -> tally on WatchResults\n\n\
             {} new voters vote at a steady {}/s (open loop) for {:?}; a vote counts as seen \
             when a WatchResults tally first holds at least as many votes as had been \
             acknowledged with it.\n\n\
             | votes/s | votes | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n\
             | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            fresh.0,
            size.fresh_rate,
            size.fresh_run,
            size.fresh_rate,
            fresh.0,
            fresh.1.p50,
            fresh.1.p90,
            fresh.1.p99,
            fresh.1.max
        ));
        self.wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;

        // Every counted vote, exactly once.
        self.check_counts().await;
        worker.stop().await;

        // The original Python vote app, when one is running (see peer()).
        if let Some(peer) = peer_url() {
            self.peer(&gateway, &peer).await;
        }

        // Read: GetResults over many stored votes.
        self.line(
            "\n## Read: GetResults against the number of stored votes\n\n\
             Votes seeded straight into PostgreSQL with `generate_series` (the tally \
             recomputed from them); 16 callers for the run's length.\n\n\
             | stored votes | calls/s | p50 ms | p99 ms | ratio to the small store |\n|---|---|---|---|---|",
        );
        let mut small = None;
        for stored in size.read_votes {
            self.seed(stored).await;
            let (rps, latency) = self.read(&result, size.run).await;
            let base = *small.get_or_insert(rps);
            self.line(format!(
                "| {stored} | {rps:.0} | {:.2} | {:.2} | {:.2} |",
                latency.p50,
                latency.p99,
                ratio(rps, base)
            ));
        }

        // Footprint.
        self.line("\n## Footprint\n\n| binary | size | idle RSS | RSS after the load | peak RSS |\n|---|---|---|---|---|");
        let dir = self.dir.clone();
        let size_of = |name: &str| {
            std::fs::metadata(dir.join(name))
                .map(|m| format!("{:.1} MiB", m.len() as f64 / 1_048_576.0))
                .unwrap_or_else(|_| "-".into())
        };
        for (name, (rss, hwm)) in loaded {
            let idle_rss = idle
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("-".to_owned(), |(_, rss)| kib(*rss));
            let line = format!(
                "| votemesh-{name} | {} | {idle_rss} | {} | {} |",
                size_of(&format!("votemesh-{name}")),
                kib(rss),
                kib(hwm)
            );
            self.line(line);
        }
        let line = format!(
            "| votemesh-worker | {} | {} | - | {} (draining) |",
            size_of("votemesh-worker"),
            kib(idle_worker),
            kib(worker_peak)
        );
        self.line(line);
        let line = format!(
            "| votemesh-loadgen | {} | - | - | - |",
            std::fs::metadata(self.bin("votemesh-loadgen"))
                .map(|m| format!("{:.1} MiB", m.len() as f64 / 1_048_576.0))
                .unwrap_or_else(|_| "-".into())
        );
        self.line(line);
        let idle_redis_line = format!(
            "\nRedis `used_memory` at start: {} (the drain table above has it before and after each backlog).",
            mib(idle_redis)
        );
        self.line(idle_redis_line);

        for process in [gateway, vote, result, noop] {
            process.stop().await;
        }
        (self.report, self.problems)
    }

    /// The gateway's form vote next to the original Python vote app's (its
    /// `POST /` with the same form), both driven by `wrk` at the same
    /// concurrency, the worker paused (the Python app has none in its
    /// path either). The peer runs outside the suite: its address is
    /// `BENCH_PEER_VOTE_URL` (README, "Load generator and benchmarks").
    async fn peer(&mut self, gateway: &Process, peer: &str) {
        let c = 64;
        let script =
            std::env::temp_dir().join(format!("votemesh-bench-form-{}.lua", std::process::id()));
        std::fs::write(
            &script,
            "wrk.method = \"POST\"\n\
             wrk.body = \"vote=a\"\n\
             wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n",
        )
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", script.display()));
        let ours = wrk(
            &format!("{}/vote", gateway.url()),
            c,
            self.size.run,
            &script,
        )
        .await;
        self.redis
            .command(&["DEL", "votes"])
            .await
            .expect("DEL votes");
        let theirs = wrk(peer, c, self.size.run, &script).await;
        let _ = std::fs::remove_file(&script);
        self.line(format!(
            "\n## Gateway vs the original Python vote app\n\n\
             `wrk -c {c}` POSTs the form `vote=a` for {:?} to each, with no cookie (a new \
             voter per request); the worker is paused. The peer is the `vote` app of \
             dockersamples/example-voting-app run as its Dockerfile runs it (gunicorn, 4 \
             workers) on this machine, pushing to a local Redis.\n\n\
             | app | requests/s | p50 ms | p99 ms | errors or non-2xx/3xx | ratio |\n|---|---|---|---|---|---|\n\
             | votemesh gateway `POST /vote` | {:.0} | {:.2} | {:.2} | {} | {:.1}x |\n\
             | original Python vote app `POST /` | {:.0} | {:.2} | {:.2} | {} | 1.0x |",
            self.size.run,
            ours.rps,
            ours.p50_ms,
            ours.p99_ms,
            ours.errors,
            ratio(ours.rps, theirs.rps),
            theirs.rps,
            theirs.p50_ms,
            theirs.p99_ms,
            theirs.errors,
        ));
        if ours.errors > 0 {
            self.problems
                .push(format!("wrk against the gateway: {} errors", ours.errors));
        }
    }

    async fn redis_benchmark(&mut self, c: usize) -> f64 {
        // The size of a queued vote: what the vote service pushes.
        let payload = r#"{"vote_id":"00000000-0000-0000-0000-000000000000","voter_id":"bench-voter-123456","option_id":"a","cast_at":"2026-01-01T00:00:00.000000Z","sequence":1234567,"trace_context":{}}"#;
        let output = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.redis.port().to_string()])
            .args([
                "-c",
                &c.to_string(),
                "-n",
                &self.size.redis_requests.to_string(),
            ])
            .args(["-q", "--csv"])
            .args([
                "EVAL",
                "return redis.call('LPUSH', KEYS[1], ARGV[1])",
                "1",
                "bench:votes",
                payload,
            ])
            .output()
            .await;
        let _ = self.redis.command(&["DEL", "bench:votes"]).await;
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                self.problems.push(format!(
                    "redis-benchmark failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
                return 0.0;
            }
            Err(error) => {
                self.problems.push(format!(
                    "redis-benchmark not run ({error}); install it with `apt-get install -y redis-tools`"
                ));
                return 0.0;
            }
        };
        // `"<the command>","<rps>",` then six latency columns: the command
        // may hold commas, so count from the end of the last line.
        let rps = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .and_then(|line| line.rsplit(',').nth(6))
            .and_then(|rps| rps.trim_matches('"').parse().ok());
        rps.unwrap_or_else(|| {
            self.problems.push(format!(
                "redis-benchmark printed no rate: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
            0.0
        })
    }

    /// Votes from new voters at a steady rate; for each, the time from its
    /// acknowledgement to the first WatchResults tally counting it.
    async fn freshness(&mut self, vote: &Process, result: &Process) -> (u64, Latency) {
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
        let rate = self.size.fresh_rate;
        let votes = rate * self.size.fresh_run.as_secs().max(1);
        let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let start = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..votes {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate as f64)).await;
            let (mut client, acked_tx) = (client.clone(), acked_tx.clone());
            calls.spawn(async move {
                let request = CastVoteRequest {
                    voter_id: format!("fresh-{n}"),
                    option: "a".into(),
                };
                if client.cast_vote(request).await.is_ok() {
                    let _ = acked_tx.send(Instant::now());
                }
            });
        }
        while calls.join_next().await.is_some() {}
        drop(acked_tx);
        let mut acks = Vec::new();
        while let Some(at) = acked_rx.recv().await {
            acks.push(at);
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
                Some((_, at)) => recorder.record(0, Ok(at.saturating_duration_since(*acked_at))),
                None => recorder.record(
                    0,
                    Err(votemesh_loadgen::target::CallFailure("never seen".into())),
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

    /// Checks votes acknowledged == rows in `votes` == the tally, per option.
    async fn check_counts(&mut self) {
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
        self.sql(
            "INSERT INTO tally (option_id, count) SELECT option_id, COUNT(*) FROM votes GROUP BY option_id \
             ON CONFLICT (option_id) DO UPDATE SET count = EXCLUDED.count",
        )
        .await;
        self.sql("ANALYZE votes").await;
    }

    /// GetResults by 16 callers for `run`, through the load generator.
    async fn read(&mut self, result: &Process, run: Duration) -> (f64, Latency) {
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

/// `BENCH_PEER_VOTE_URL`, when set and not empty.
fn peer_url() -> Option<String> {
    std::env::var("BENCH_PEER_VOTE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// What one `wrk` run measured.
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Socket errors plus non-2xx/3xx answers.
    errors: u64,
}

/// Runs `wrk --latency` with `script` against `url`.
async fn wrk(url: &str, connections: usize, run: Duration, script: &Path) -> WrkRun {
    let output = Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", run.as_secs().max(1))])
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run wrk (apt-get install wrk): {error}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk {url} failed: {text}");
    let after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let millis = |value: Option<&str>| {
        value.map_or(f64::NAN, |v| {
            let (number, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let number: f64 = number.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => number / 1000.0,
                "s" => number * 1000.0,
                _ => number,
            }
        })
    };
    let socket_errors: u64 = after("Socket errors:")
        .map(|errors| {
            errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let bad_answers: u64 = after("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    WrkRun {
        rps: after("Requests/sec:")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0),
        p50_ms: millis(after("50%")),
        p99_ms: millis(after("99%")),
        errors: socket_errors + bad_answers,
    }
}

fn ratio(value: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        value / reference
    } else {
        0.0
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

fn kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The machine and the code measured, for the report's head.
pub async fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|value| value.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(|value| value.trim().to_owned())
        .unwrap_or_default();
    let git = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            Command::new("git")
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .await
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        }
    };
    // Paths relative to this crate: the workspace's product code.
    let product = [
        "../../src",
        "../../services",
        "../../gateway",
        "../../proto",
    ];
    let commit = git(&["log", "-1", "--format=%h %s"]).await;
    let product_commit =
        git(&[&["log", "-1", "--format=%h %s", "--"][..], &product[..]].concat()).await;
    let dirty = !git(&[
        &["status", "--porcelain", "--untracked-files=no", "--"][..],
        &product[..],
    ]
    .concat())
    .await
    .is_empty();
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut text = String::new();
    let _ = writeln!(text, "- Machine: {cores} cores, {model}, {memory} memory");
    let _ = writeln!(
        text,
        "- Code measured: the services at commit `{product_commit}` (the last one touching \
         `src/`, `services/`, `gateway/`, `proto/`){}; the suite and the generator at `{commit}`",
        if dirty {
            ", with uncommitted changes there"
        } else {
            ""
        }
    );
    let _ = writeln!(
        text,
        "- {redis}; PostgreSQL from the test harness (fsync off)"
    );
    text
}
