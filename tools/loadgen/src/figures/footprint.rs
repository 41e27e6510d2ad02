//! Footprint: each binary's size, and its memory idle, after the load and
//! at its peak (RSS from /proc), with Redis's memory at start.

use super::{Process, Suite, kib, mib};

/// What the processes held before any load.
pub(super) struct Idle {
    /// Redis `used_memory` at start, in bytes.
    pub(super) redis: u64,
    /// Name and RSS (KiB) of the vote and result services.
    pub(super) services: [(String, u64); 2],
    /// RSS (KiB) of an idle worker.
    pub(super) worker: u64,
}

impl Suite {
    /// Measures the idle footprint of the running `vote` and `result`
    /// services and of a worker started for it (and stopped).
    pub(super) async fn idle_footprint(&mut self, vote: &Process, result: &Process) -> Idle {
        let redis = self.redis_used_memory().await;
        let services = [vote, result].map(|p| (p.name.clone(), p.memory().0));
        let worker = self.worker("bench-idle").await;
        let idle_worker = worker.memory().0;
        worker.stop().await;
        self.goals.idle_rss.extend(services.iter().cloned());
        self.goals.idle_rss.push(("worker".into(), idle_worker));
        Idle {
            redis,
            services,
            worker: idle_worker,
        }
    }

    /// Writes the footprint table: `idle` before any load, `loaded`
    /// (name, RSS and peak RSS in KiB) after it, and the draining
    /// workers' peak RSS.
    pub(super) fn footprint(
        &mut self,
        idle: &Idle,
        loaded: [(String, (u64, u64)); 3],
        worker_peak: u64,
    ) {
        let idle_worker = idle.worker;
        let idle_redis = idle.redis;
        let idle = &idle.services;
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
    }
}
