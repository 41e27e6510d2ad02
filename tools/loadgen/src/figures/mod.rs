//! The benchmark suite, shared by `cargo bench -p votemesh-loadgen --bench suite` (full
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
//! cluster    ingest and drain again on a 3-primary Redis Cluster, 16 shards  vs one Redis, same run
//! gateway    form and JSON vote, c=64                 vs CastVote direct, c=64
//! freshness  ack -> WatchResults at a steady rate
//! read       GetResults at a small and a large number of stored votes (seeded with generate_series)
//! footprint  binary sizes, idle and peak RSS from /proc
//! ```
//!
//! The live results streams have their own run and bench target
//! ([`streams`]: `cargo bench -p votemesh-loadgen --bench streams`).
//!
//! Each figure is one module (`ingest`, `sustained`, `drain`, `cluster`, `gateway`,
//! `freshness`, `counts`, `peer`, `read`, `footprint`) adding its section
//! to the report; [`Suite::run`] runs them in that order, and [`report`]
//! puts the body under its head (the machine, the code, the size). Where a
//! figure falls short of its floor, the CPU each process spent during the
//! run says why (`cpu`).
//!
//! Every counted vote is checked at the end: votes acknowledged by the
//! services == rows in `votes` == the tally's total, option by option.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

mod affinity;
mod cluster;
mod counts;
mod cpu;
mod drain;
mod footprint;
mod freshness;
mod gateway;
mod goals;
mod ingest;
mod peer;
mod read;
pub mod report;
mod session;
pub mod soak;
pub mod streams;
mod sustained;

use crate::summary::Summary;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::process::{Child, Command};
use votemesh::store;
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
    /// Votes per second of each freshness run.
    pub fresh_rates: Vec<u64>,
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
            fresh_rates: vec![1_000, 10_000],
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
            fresh_rates: vec![100],
            fresh_run: Duration::from_secs(1),
        }
    }

    /// The middle concurrency (64 at full size): the one the sustained,
    /// drain and gateway figures use, against its floor.
    fn middle_concurrency(&self) -> usize {
        if self.concurrencies.contains(&64) {
            64
        } else {
            self.concurrencies.last().copied().unwrap_or(1)
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

/// Where a service's log goes: `BENCH_LOG_DIR/<name>.log` (appended to)
/// when that is set, nowhere otherwise.
fn log_file(name: &str) -> Stdio {
    let Some(dir) = std::env::var_os("BENCH_LOG_DIR") else {
        return Stdio::null();
    };
    let path = Path::new(&dir).join(format!("{name}.log"));
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
    });
    match file {
        Ok(file) => Stdio::from(file),
        Err(error) => panic!("cannot write the log {}: {error}", path.display()),
    }
}

impl Process {
    /// Starts `binary` on a free port with `env`, on `cpus` when given
    /// (from its first instruction, so it sizes itself for them: its
    /// runtime's worker threads, `MAX_IN_FLIGHT`'s default), in a session
    /// of its own ([`session`]).
    async fn start(
        binary: &Path,
        name: &str,
        env: &[(&str, String)],
        cpus: Option<&[usize]>,
    ) -> Self {
        let port = free_port().await.expect("a free port");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = Command::new(binary);
        command
            // Warnings, and when admission's overloads begin and end (read
            // against a run's refusals), kept with BENCH_LOG_DIR.
            .env("RUST_LOG", "warn,votemesh::admission=info")
            .stdin(Stdio::null())
            .stdout(log_file(name))
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value.replace("{addr}", &addr.to_string()));
        }
        if let Some(cpus) = cpus {
            affinity::pin_on_start(&mut command, cpus);
        }
        session::own_session(&mut command);
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
    /// An open loop at this many votes/s instead of `concurrency` callers.
    rate: Option<f64>,
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
            rate: None,
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
    /// The CPUs the load generator starts on, when the system under test
    /// is pinned to the others ([`affinity`]).
    generator_cpus: Option<Vec<usize>>,
    /// The CPUs services and floor servers start on, when set (the soak's
    /// overload part); otherwise every CPU.
    service_cpus: Option<Vec<usize>>,
    /// What the goals table needs besides `costs`.
    goals: goals::Inputs,
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
            generator_cpus: None,
            service_cpus: None,
            goals: goals::Inputs::default(),
        }
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts the release binary `binary` as `name` with `env`
    /// ([`Process::start`]), on the service CPUs when they are set.
    async fn start_process(&self, binary: &str, name: &str, env: &[(&str, String)]) -> Process {
        Process::start(&self.bin(binary), name, env, self.service_cpus.as_deref()).await
    }

    async fn vote(&self) -> Process {
        self.start_process(
            "votemesh-vote",
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
        self.start_process(
            "votemesh-worker",
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
        self.start_process(
            "votemesh-result",
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
        self.gateway_with(vote, result, &[]).await
    }

    /// [`Self::gateway`] with more settings (`(variable, value)`).
    async fn gateway_with(
        &self,
        vote: &Process,
        result: &Process,
        settings: &[(&str, String)],
    ) -> Process {
        let mut env = vec![
            ("GATEWAY_LISTEN_ADDR", "{addr}".to_owned()),
            ("GATEWAY_ADMIN_LISTEN_ADDR", "127.0.0.1:0".into()),
            ("VOTE_ADDR", vote.url()),
            ("RESULT_ADDR", result.url()),
        ];
        env.extend(settings.iter().cloned());
        self.start_process("votemesh-gateway", "gateway", &env)
            .await
            .ready(false)
            .await
    }

    async fn noop(&self) -> Process {
        self.floor_server("noop", "LOADGEN_NOOP_SERVER", &[]).await
    }

    /// `votemesh-loadgen` serving one of its floors on a free port: the
    /// server `switch` (its `LOADGEN_*_SERVER` variable) turns on, with
    /// `settings` besides.
    async fn floor_server(&self, name: &str, switch: &str, settings: &[(&str, String)]) -> Process {
        let mut env = vec![
            (switch, "true".to_owned()),
            ("NOOP_LISTEN_ADDR", "{addr}".to_owned()),
        ];
        env.extend_from_slice(settings);
        self.start_process("votemesh-loadgen", name, &env)
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
        if let Some(cpus) = &self.generator_cpus {
            affinity::pin_on_start(&mut command, cpus);
        }
        command.arg(match load.mode {
            "grpc" => "--vote-addr",
            "results" => "--result-addr",
            _ => "--gateway-url",
        });
        command.arg(&load.address);
        match load.rate {
            Some(rate) => command.args(["--rate", &format!("{rate:.0}")]),
            None => command.args(["-c", &load.concurrency.to_string()]),
        };
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
        // Exit status 1 with a summary: no call succeeded (the refusal
        // floor refuses every one); its failures are reported below.
        assert!(
            output.status.success()
                || (output.status.code() == Some(1) && !output.stdout.is_empty()),
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
        let meter = cpu::Meter::start(self.metered_groups(processes));
        let summary = self.load(load).await;
        let cost = meter.stop();
        self.costs
            .push((label.to_owned(), summary.ok, summary.throughput, cost));
        summary
    }

    /// What a metered run measures: `processes`, Redis and PostgreSQL
    /// (with its backends).
    fn metered_groups(&self, processes: &[&Process]) -> Vec<cpu::Group> {
        let mut groups: Vec<cpu::Group> = processes.iter().filter_map(|p| p.cpu_group()).collect();
        groups.extend(cpu::Group::one("redis", self.redis.pid()));
        groups.extend(cpu::Group::tree("postgres", self.postgres.pid()));
        groups
    }

    /// The "Where the CPU goes" section: each metered run's CPU time per
    /// call, by process.
    fn cpu_section(&mut self) {
        // Kept for the goals table, which reads them once the run is over.
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
                cell(&["gateway", "gateway-floor"]),
                cell(&["redis"]),
                cell(&worker_names),
                cell(&["postgres"]),
                cost.total_per_thousand(*calls),
            );
            self.line(line);
        }
        self.costs = costs;
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

    /// Runs every figure, in this order, and returns the report's body
    /// (Markdown) and the problems seen.
    pub async fn run(mut self) -> (String, Vec<String>) {
        let vote = self.vote().await;
        let result = self.result().await;
        let noop = self.noop().await;
        let idle = self.idle_footprint(&vote, &result).await;
        let c_mid = self.size.middle_concurrency();

        let floor_mid = self.ingest(&vote, &noop, c_mid).await;
        self.sustained(&vote, c_mid, floor_mid).await;
        let worker_peak = self.drain(&vote, c_mid).await;
        self.cluster(c_mid).await;

        // The full path from here on, the worker draining.
        let worker = self.worker("bench-live").await;
        let gateway = self.gateway(&vote, &result).await;
        self.goals
            .idle_rss
            .push((gateway.name.clone(), gateway.memory().0));
        self.gateway_votes(&vote, &worker, &gateway, c_mid).await;
        self.cpu_section();
        let loaded = [&vote, &result, &gateway].map(|p| (p.name.clone(), p.memory()));
        self.wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;
        self.freshness(&vote, &result).await;
        self.wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;
        self.check_counts().await;
        worker.stop().await;

        if let Some(peer) = peer::peer_url() {
            self.peer(&gateway, &peer).await;
        }
        self.read(&result).await;
        self.footprint(&idle, loaded, worker_peak);

        for process in [gateway, vote, result, noop] {
            process.stop().await;
        }
        let goals = self.goals_section(c_mid);
        (format!("{goals}\n{}", self.report), self.problems)
    }
}

/// `value` as a multiple of `reference` (0 when there is no reference).
fn ratio(value: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        value / reference
    } else {
        0.0
    }
}

/// Bytes as MiB, for a table.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// KiB as MiB, for a table.
fn kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
