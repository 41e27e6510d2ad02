//! Soak: what real arrivals do over minutes, through the gateway's JSON
//! route into the whole system (vote, worker draining, result, gateway;
//! real Redis and PostgreSQL), nobody scraping `/metrics`.
//!
//! ```text
//! capacity   closed loop, c=64, 20 s                    the served rate the rest is read against
//! stalls     open loop at RATE for MINUTES; the vote service frozen (SIGSTOP) for 300 ms
//!            every 15 s, as CFS throttling or a noisy neighbour would; RSS of every
//!            process every 5 s                          goal: no failed vote; RSS slope
//!                                                       over the last 2/3 < 0.1 MiB/min
//! overload   open loop at 1.5 x capacity for 60 s       goal: served >= 90 % of capacity,
//!                                                       refusals within 10 ms, Retry-After;
//!                                                       second by second: the generator's
//!                                                       answers beside each process's CPU
//! recovery   open loop at half capacity for 20 s, at once   goal: no failed vote
//! refusal    the refusal floor (hyper alone, refusing every vote) on the system's CPUs at
//! floor      the overload rate for 20 s                 its CPU per refusal, against the gateway's
//! ```
//!
//! `cargo bench -p votemesh-loadgen --bench soak` runs it ([`SoakSize`]
//! from the environment) and writes `docs/SOAK.md`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Load, Suite, affinity, cpu, ratio};
use crate::summary::{Latency, Summary};

/// How long and how hard the soak runs.
#[derive(Clone, Debug)]
pub struct SoakSize {
    /// The stall run's rate, votes/s.
    pub rate: f64,
    /// The stall run's length.
    pub run: Duration,
    /// A freeze of the vote service every this long...
    pub freeze_every: Duration,
    /// ...for this long.
    pub freeze_for: Duration,
    /// RSS samples every this long: often, because the gateway's RSS
    /// rises with each stall's burst of connections and falls a second
    /// or two later, and a slope fitted to a few samples is decided by
    /// which of them caught a burst.
    pub sample_every: Duration,
    /// The overload run's length.
    pub overload_run: Duration,
}

impl SoakSize {
    /// The issue's goals: 30 minutes at 2,000 votes/s, a freeze every 15 s
    /// (`SOAK_MINUTES`, `SOAK_RATE` and `SOAK_FREEZE_EVERY_SECONDS` change
    /// them: freezes more often find a rare episode sooner).
    pub fn from_env() -> Self {
        let number = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(default)
        };
        Self {
            rate: number("SOAK_RATE", 2_000.0),
            run: Duration::from_secs_f64(number("SOAK_MINUTES", 30.0) * 60.0),
            freeze_every: Duration::from_secs_f64(number("SOAK_FREEZE_EVERY_SECONDS", 15.0)),
            freeze_for: Duration::from_millis(300),
            sample_every: Duration::from_secs(5),
            overload_run: Duration::from_secs_f64(number("SOAK_OVERLOAD_SECONDS", 60.0)),
        }
    }
}

/// The overload section's runs.
struct Overloads {
    /// `(system, generator)` CPUs, when pinned.
    pinned: Option<(Vec<usize>, Vec<usize>)>,
    /// Closed loop in the pinned layout: what the others are read against.
    capacity: Summary,
    /// Open loop at 1.5 x `capacity`.
    overload: Summary,
    /// The cores each process kept busy in each second of `overload`:
    /// the processes' names, then the figures by second in that order.
    overload_cpu: (Vec<String>, Vec<Vec<f64>>),
    /// Open loop at 0.5 x `capacity`, right after.
    recovery: Summary,
    /// What a refusal costs, µs of CPU: the gateway's, and the refusal
    /// floor's on the same CPUs at the same rate.
    refusal_micros: RefusalCost,
    /// The refusal floor's run: how fast refusals come back with nothing
    /// but hyper refusing, the reference for the overload's refusal
    /// latencies.
    floor: Option<Summary>,
}

/// CPU per refusal under overload, µs.
struct RefusalCost {
    /// The gateway's CPU during the overload run less what its served
    /// votes cost at the capacity run's rate per vote, over its refusals.
    gateway: Option<f64>,
    /// `votemesh-loadgen --refusal-floor-server` ([`crate::refusal_floor`]).
    floor: Option<f64>,
}

/// RSS samples: (seconds since the start, KiB) per process.
type Samples = Vec<(String, Vec<(f64, u64)>)>;

impl Suite {
    /// Runs the soak and returns its report.
    pub async fn soak(mut self, size: &SoakSize) -> (String, Vec<String>) {
        let vote = self.vote().await;
        let worker = self.worker("bench-soak-worker").await;
        let result = self.result().await;
        let gateway = self.gateway(&vote, &result).await;
        let json = |prefix: &str| Self::soak_load(prefix, &gateway);

        let capacity = self.load(json("soak-capacity")).await;
        self.counted(&capacity);

        // The stall run, with a freezer and a memory sampler beside it.
        let (stalls, freezes, samples) = if size.run.is_zero() {
            (None, 0, Samples::new())
        } else {
            let stop = CancellationToken::new();
            let watched: Vec<(String, Option<u32>)> = [&vote, &worker, &result, &gateway]
                .iter()
                .map(|p| (p.name.clone(), p.child.id()))
                .collect();
            let sampler = tokio::spawn(sample_memory(watched, size.sample_every, stop.clone()));
            let freezer = tokio::spawn(freeze_every(
                vote.child.id(),
                size.freeze_every,
                size.freeze_for,
                stop.clone(),
            ));
            let stalls = self
                .load(Load {
                    rate: Some(size.rate),
                    run: Some(size.run),
                    ..json("soak-stalls")
                })
                .await;
            stop.cancel();
            let freezes = freezer.await.unwrap_or(0);
            let samples = sampler.await.unwrap_or_default();
            self.counted(&stalls);
            (Some(stalls), freezes, samples)
        };

        let mut services = [gateway, result, worker, vote];
        let overloads = if size.overload_run.is_zero() {
            None
        } else {
            let (overloads, pinned_services) = self.overload_runs(size, services).await;
            services = pinned_services;
            Some(overloads)
        };
        self.soak_report(
            size,
            &capacity,
            stalls.as_ref().map(|stalls| (stalls, freezes, &samples)),
            overloads.as_ref(),
        );
        let caught_up = self
            .wait_counted(self.expected_total(), Duration::from_secs(600))
            .await;
        self.line(format!(
            "\nEvery acknowledged vote was counted ({} in all; the worker caught up {:.1} s after the last run).",
            self.expected_total(),
            caught_up.as_secs_f64()
        ));
        for process in services {
            process.stop().await;
        }
        (
            std::mem::take(&mut self.report),
            std::mem::take(&mut self.problems),
        )
    }

    /// JSON votes through `gateway` by 200,000 voters named `prefix-<n>`:
    /// a closed loop of 64 callers for 20 s unless changed.
    fn soak_load(prefix: &str, gateway: &super::Process) -> Load<'static> {
        Load {
            mode: "json",
            address: gateway.url(),
            concurrency: 64,
            run: Some(Duration::from_secs(20)),
            count: None,
            rate: None,
            voters: 200_000,
            prefix: prefix.to_owned(),
        }
    }

    /// Overload and recovery, read against the capacity of the same
    /// pinned layout: the system on half the cores, the generator on the
    /// other half, so that the generator's own extra work at 1.5 x takes
    /// nothing from the system it loads. `services` (gateway, result,
    /// worker, vote) are stopped and started again on the system's cores,
    /// so that each sizes itself for them (its runtime's worker threads,
    /// `MAX_IN_FLIGHT`'s default), as under a CPU limit of that many
    /// cores: pinned after starting, they kept what they had sized for
    /// every core (two worker threads each taking turns on one core;
    /// docs/SOAK.md, the eighth run). Returns the services now running.
    async fn overload_runs(
        &mut self,
        size: &SoakSize,
        services: [super::Process; 4],
    ) -> (Overloads, [super::Process; 4]) {
        let (pinned, services) = self.pin_system(services).await;
        let [gateway, result, worker, vote] = &services;
        let system = [vote, worker, result, gateway];
        // As many callers as the restarted gateway admits at once: more
        // would keep a line that never empties, which admission reads as
        // overload (the unpinned capacity's 64 callers are its 64 permits).
        let callers = pinned.as_ref().map_or(64, |(system, _)| {
            votemesh::admission::IN_FLIGHT_PER_CPU * system.len()
        });
        let pinned_capacity = self
            .load_metered(
                "capacity",
                &system,
                Load {
                    concurrency: callers,
                    ..Self::soak_load("soak-capacity-pinned", gateway)
                },
            )
            .await;
        self.counted(&pinned_capacity);
        let groups = self.metered_groups(&system);
        let names = groups.iter().map(|group| group.name.clone()).collect();
        let stop_sampling = CancellationToken::new();
        let sampler = tokio::spawn(cpu::busy_by_second(groups, stop_sampling.clone()));
        let overload = self
            .load_metered(
                "overload, 1.5 x",
                &system,
                Load {
                    rate: Some(pinned_capacity.throughput * 1.5),
                    run: Some(size.overload_run),
                    ..Self::soak_load("soak-overload", gateway)
                },
            )
            .await;
        stop_sampling.cancel();
        let overload_cpu = (names, sampler.await.unwrap_or_default());
        self.counted(&overload);
        let recovery = self
            .load_metered(
                "recovery, 0.5 x",
                &system,
                Load {
                    rate: Some(pinned_capacity.throughput * 0.5),
                    run: Some(Duration::from_secs(20)),
                    ..Self::soak_load("soak-recovery", gateway)
                },
            )
            .await;
        self.counted(&recovery);
        let system_cpus = pinned.as_ref().map(|(system, _)| system.clone());
        let (floor, floor_run) = self
            .refusal_floor(system_cpus.as_deref(), pinned_capacity.throughput * 1.5)
            .await;
        let gateway_cores = |label: &str| {
            self.costs
                .iter()
                .find(|(run, ..)| run == label)
                .map(|(.., cost)| cost.cores("gateway"))
        };
        let gateway = match (gateway_cores("capacity"), gateway_cores("overload, 1.5 x")) {
            (Some(at_capacity), Some(overloaded)) if overload.failed > 0 => {
                let per_served = at_capacity / pinned_capacity.throughput.max(1.0);
                let refused_per_second = overload.failed as f64 / overload.seconds.max(1e-9);
                Some((overloaded - overload.throughput * per_served) / refused_per_second * 1e6)
            }
            _ => None,
        };
        self.unpin_system(&system);
        // Refusals under overload are the point of that run, not a problem.
        self.problems
            .retain(|problem| !problem.contains("(prefix soak-overload)"));
        let overloads = Overloads {
            pinned,
            capacity: pinned_capacity,
            overload,
            overload_cpu,
            recovery,
            refusal_micros: RefusalCost { gateway, floor },
            floor: floor_run,
        };
        (overloads, services)
    }

    /// The refusal floor on `cpus` (the system's, when pinned), open loop
    /// at `rate` for 20 s: its CPU per refusal, in µs, and the run.
    async fn refusal_floor(
        &mut self,
        cpus: Option<&[usize]>,
        rate: f64,
    ) -> (Option<f64>, Option<Summary>) {
        // Started on the system's CPUs, as the services were.
        self.service_cpus = cpus.map(<[usize]>::to_vec);
        let server = self
            .floor_server("refusal-floor", "LOADGEN_REFUSAL_FLOOR_SERVER", &[])
            .await;
        self.service_cpus = None;
        let meter = cpu::Meter::start(server.cpu_group().into_iter().collect());
        let refused = self
            .load(Load {
                rate: Some(rate),
                ..Self::soak_load("soak-refusal-floor", &server)
            })
            .await;
        let cost = meter.stop();
        server.stop().await;
        // It refuses every vote by design.
        self.problems
            .retain(|problem| !problem.contains("(prefix soak-refusal-floor)"));
        let micros = (refused.failed > 0).then(|| {
            cost.cores("refusal-floor") * 1e6 / (refused.failed as f64 / refused.seconds.max(1e-9))
        });
        (micros, Some(refused))
    }

    /// Puts the system under test on the first half of the allowed CPUs:
    /// Redis and PostgreSQL pinned there, `services` (gateway, result,
    /// worker, vote) stopped and started again there; and every generator
    /// started from now on on the rest. Returns `(system, generator)` CPUs
    /// (`None` on a one-core machine, where nothing moves) and the
    /// services now running.
    async fn pin_system(
        &mut self,
        services: [super::Process; 4],
    ) -> (Option<(Vec<usize>, Vec<usize>)>, [super::Process; 4]) {
        let allowed = affinity::allowed_cpus();
        if allowed.len() < 2 {
            return (None, services);
        }
        let (system, generator) = allowed.split_at(allowed.len() / 2);
        for process in services {
            process.stop().await;
        }
        self.pin_all(&[], system);
        self.service_cpus = Some(system.to_vec());
        let vote = self.vote().await;
        let worker = self.worker("bench-soak-worker").await;
        let result = self.result().await;
        let gateway = self.gateway(&vote, &result).await;
        self.service_cpus = None;
        self.generator_cpus = Some(generator.to_vec());
        (
            Some((system.to_vec(), generator.to_vec())),
            [gateway, result, worker, vote],
        )
    }

    /// Lets the system and the generator run on every allowed CPU again.
    fn unpin_system(&mut self, services: &[&super::Process]) {
        self.pin_all(services, &affinity::allowed_cpus());
        self.generator_cpus = None;
    }

    fn pin_all(&self, services: &[&super::Process], cpus: &[usize]) {
        let pids = services
            .iter()
            .map(|p| (p.child.id(), false))
            .chain([(self.redis.pid(), false), (self.postgres.pid(), true)]);
        for (pid, children) in pids {
            if let Some(pid) = pid
                && let Err(error) = affinity::pin(pid, children, cpus)
            {
                panic!("cannot pin process {pid} to CPUs {cpus:?}: {error}");
            }
        }
    }

    fn soak_report(
        &mut self,
        size: &SoakSize,
        capacity: &Summary,
        stalls: Option<(&Summary, u64, &Samples)>,
        overloads: Option<&Overloads>,
    ) {
        let failures = |summary: &Summary| {
            if summary.failures.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", summary.failures)
            }
        };
        self.line(format!(
            "## Capacity\n\nClosed loop, 64 callers, JSON votes through the gateway, 20 s: \
             **{:.0} votes/s** (p50 {:.2} ms, p99 {:.2} ms).\n",
            capacity.throughput, capacity.latency_ms.p50, capacity.latency_ms.p99
        ));
        if let Some((stalls, freezes, samples)) = stalls {
            self.line(format!(
                "## Stalls\n\nOpen loop at {:.0} votes/s ({:.0} % of capacity) for {:.0} min, the vote \
                 service frozen for {} ms every {} s ({freezes} freezes).\n\n\
                 | sent | acknowledged | failed | failures | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n\
                 | {} | {} | **{}** | {} | {:.2} | {:.2} | {:.0} |\n",
                size.rate,
                100.0 * size.rate / capacity.throughput.max(1.0),
                size.run.as_secs_f64() / 60.0,
                size.freeze_for.as_millis(),
                size.freeze_every.as_secs(),
                stalls.sent,
                stalls.ok,
                stalls.failed,
                failures(stalls),
                stalls.latency_ms.p50,
                stalls.latency_ms.p99,
                stalls.latency_ms.max,
            ));
            self.line(format!(
                "## Memory\n\nRSS from `/proc/<pid>/status` every {} s during the stall run; the slope is \
                 a least-squares fit over its last two thirds (goal: under 0.1 MiB a minute).\n\n\
                 | process | RSS at start | at a third | at the end | highest | slope over the last 2/3, MiB/min |\n|---|---|---|---|---|---|",
                size.sample_every.as_secs()
            ));
            for (name, series) in samples {
                let third = series.len() / 3;
                let at = |i: usize| series.get(i).map_or(0.0, |&(_, kib)| kib as f64 / 1024.0);
                let highest = series.iter().map(|&(_, kib)| kib).max().unwrap_or(0);
                self.line(format!(
                    "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.3} |",
                    at(0),
                    at(third),
                    at(series.len().saturating_sub(1)),
                    highest as f64 / 1024.0,
                    slope_mib_per_minute(&series[third.min(series.len())..]),
                ));
            }
        }
        let Some(Overloads {
            pinned,
            capacity: pinned_capacity,
            overload,
            overload_cpu,
            recovery,
            refusal_micros,
            floor,
        }) = overloads
        else {
            return;
        };
        let layout = match pinned {
            Some((system, generator)) => format!(
                "Redis and PostgreSQL run pinned to CPU {system:?}, the services (and the \
                     refusal floor) are started again there, so each sizes itself for those CPUs as \
                     under a CPU limit, and the load generator runs on CPU {generator:?} \
                     (`sched_setaffinity`), so the generator's extra work at 1.5 x takes nothing from \
                     the system it loads; capacity is measured again in that layout: closed loop, \
                     {} callers (what the gateway admits at once there), 20 s: **{:.0} votes/s** (p50 \
                     {:.2} ms, p99 {:.2} ms).",
                pinned_capacity.concurrency.unwrap_or_default(),
                pinned_capacity.throughput,
                pinned_capacity.latency_ms.p50,
                pinned_capacity.latency_ms.p99
            ),
            None => "One CPU: nothing pinned.".to_owned(),
        };
        let refused = overload.failed;
        let refusal = overload.failed_latency_ms.as_ref();
        let latencies = |latency: Option<&Latency>| {
            latency.map_or("-".to_owned(), |l| {
                format!("{:.2} / {:.2} / {:.0}", l.p50, l.p99, l.max)
            })
        };
        let floor_row = floor.as_ref().map_or(String::new(), |floor| {
            format!(
                "| refusal floor (hyper alone refusing every vote, same CPUs) | {:.0} | - | - | {} | - | {} | - |\n",
                floor.rate.unwrap_or_default(),
                floor.failed,
                latencies(floor.failed_latency_ms.as_ref()),
            )
        });
        self.line(format!(
                "\n## Overload\n\n{layout} Then open loop at 1.5 x that capacity ({:.0} votes/s) \
                 for {:.0} s, then at half capacity ({:.0} votes/s) for 20 s.\n\n\
                 | run | offered/s | served/s | served / capacity | refused | refusals | refusal p50 / p99 / max ms | served p50 / p99 / max ms |\n|---|---|---|---|---|---|---|---|\n\
                 | overload | {:.0} | {:.0} | {:.2} | {refused} | {} | {} | {:.1} / {:.1} / {:.0} |\n\
                 | recovery | {:.0} | {:.0} | {:.2} | {} | {} | - | {:.1} / {:.1} / {:.0} |\n{floor_row}",
                pinned_capacity.throughput * 1.5,
                overload.seconds,
                pinned_capacity.throughput * 0.5,
                pinned_capacity.throughput * 1.5,
                overload.throughput,
                ratio(overload.throughput, pinned_capacity.throughput),
                failures(overload),
                latencies(refusal),
                overload.latency_ms.p50,
                overload.latency_ms.p99,
                overload.latency_ms.max,
                pinned_capacity.throughput * 0.5,
                recovery.throughput,
                ratio(recovery.throughput, pinned_capacity.throughput),
                recovery.failed,
                failures(recovery),
                recovery.latency_ms.p50,
                recovery.latency_ms.p99,
                recovery.latency_ms.max,
            ));
        self.overload_by_second(overload, overload_cpu);
        if let Some((system, _)) = pinned {
            // A served vote's CPU: the system's cores, saturated at capacity.
            let served_micros = system.len() as f64 * 1e6 / pinned_capacity.throughput.max(1.0);
            let show = |micros: Option<f64>| {
                micros.map_or("-".to_owned(), |micros| {
                    let r = micros / served_micros;
                    // At r >= 2/3 refusing half the offered load takes every core.
                    let bound = if r < 2.0 / 3.0 {
                        (1.0 - 1.5 * r) / (1.0 - r)
                    } else {
                        0.0
                    };
                    format!("**{micros:.1} µs** (r = {r:.2}, served at most {bound:.2})")
                })
            };
            self.line(format!(
                "\nWhat a refusal costs, against the {served_micros:.0} µs of a served vote (the \
                 system's CPUs over its capacity): the gateway's {} (its CPU in the overload run \
                 less its served votes' at the capacity run's cost per vote, over its refusals); \
                 the refusal floor's {} (`votemesh-loadgen --refusal-floor-server`: hyper alone \
                 answering every vote as the overloaded gateway does, on the system's CPUs at the \
                 overload run's rate for 20 s). When refusals cost r of a served vote on the cores \
                 that serve, 1.5 x can serve at most (1 - 1.5 r) / (1 - r) of capacity.",
                show(refusal_micros.gateway),
                show(refusal_micros.floor),
            ));
        }
        self.cpu_section();
        self.line(
            "\nUnder overload the per-call figures divide the CPU of served and refused \
                 requests alike by the served ones.",
        );
    }
}

impl Suite {
    /// The overload run second by second: the generator's answers to the
    /// calls due in each second beside the cores each process kept busy
    /// in it, to see when refusals were slow and what ran then.
    fn overload_by_second(
        &mut self,
        overload: &Summary,
        (names, cpu): &(Vec<String>, Vec<Vec<f64>>),
    ) {
        let slow: u64 = overload
            .timeline
            .iter()
            .map(|second| second.failed_slow)
            .sum();
        self.line(format!(
            "\nThe overload second by second: each second's calls (by when they were due), \
             and the cores each process kept busy in it (from `/proc` every second, started \
             with the generator). {slow} of the {} refusals took more than {} ms.\n\n\
             <details><summary>{} seconds</summary>\n\n\
             | s | served | slowest served ms | refused | refused > {} ms | slowest refusal ms | {} |\n\
             |---|---|---|---|---|---|{}",
            overload.failed,
            crate::recorder::SLOW_FAILURE.as_millis(),
            overload.timeline.len(),
            crate::recorder::SLOW_FAILURE.as_millis(),
            names.join(" | "),
            "---|".repeat(names.len()),
        ));
        for (at, second) in overload.timeline.iter().enumerate() {
            let cores: Vec<String> = cpu.get(at).map_or_else(
                || vec!["-".to_owned(); names.len()],
                |busy| busy.iter().map(|cores| format!("{cores:.2}")).collect(),
            );
            self.line(format!(
                "| {at} | {} | {:.0} | {} | {} | {:.0} | {} |",
                second.ok,
                second.ok_max_ms,
                second.failed,
                second.failed_slow,
                second.failed_max_ms,
                cores.join(" | "),
            ));
        }
        self.line("\n</details>\n");
    }
}

/// Least-squares slope of (seconds, KiB) samples, in MiB per minute.
fn slope_mib_per_minute(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|&(t, _)| t).sum::<f64>() / n;
    let mean_m = samples.iter().map(|&(_, m)| m as f64).sum::<f64>() / n;
    let covariance: f64 = samples
        .iter()
        .map(|&(t, m)| (t - mean_t) * (m as f64 - mean_m))
        .sum();
    let variance: f64 = samples.iter().map(|&(t, _)| (t - mean_t).powi(2)).sum();
    if variance == 0.0 {
        return 0.0;
    }
    covariance / variance * 60.0 / 1024.0
}

/// Samples each process's RSS every `every` until `stop`.
async fn sample_memory(
    processes: Vec<(String, Option<u32>)>,
    every: Duration,
    stop: CancellationToken,
) -> Samples {
    let started = Instant::now();
    let mut samples: Samples = processes
        .iter()
        .map(|(name, _)| (name.clone(), Vec::new()))
        .collect();
    loop {
        let at = started.elapsed().as_secs_f64();
        for ((_, pid), (_, series)) in processes.iter().zip(samples.iter_mut()) {
            if let Some(kib) = pid.and_then(rss_kib) {
                series.push((at, kib));
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    samples
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Freezes `pid` (SIGSTOP) for `pause` every `every` until `stop`; returns
/// how many times. The process is always left running.
async fn freeze_every(
    pid: Option<u32>,
    every: Duration,
    pause: Duration,
    stop: CancellationToken,
) -> u64 {
    let Some(pid) = pid else { return 0 };
    let signal = |signal| {
        // SAFETY: kill(2) only sends a signal.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    };
    let mut freezes = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        signal(libc::SIGSTOP);
        tokio::time::sleep(pause).await;
        signal(libc::SIGCONT);
        freezes += 1;
    }
    freezes
}
