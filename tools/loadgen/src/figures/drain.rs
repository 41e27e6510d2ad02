//! Drain: a backlog queued through the vote service (worker stopped),
//! then timed from the workers' start until the queue is empty and the
//! tally holds every voter, with 1 and 2 workers; Redis memory before and
//! after, and the CPU each process spent.

use std::time::{Duration, Instant};

use super::{Load, Process, Suite, cpu, kib, mib};

impl Suite {
    /// Writes the drain table; returns the peak RSS of a draining worker
    /// (KiB), for the footprint figure.
    pub(super) async fn drain(&mut self, vote: &Process, c_mid: usize) -> u64 {
        let size = self.size.clone();
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
                    rate: None,
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
        worker_peak
    }
}
