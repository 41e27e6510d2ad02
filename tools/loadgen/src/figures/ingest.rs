//! Ingest: CastVote with the worker paused, at each concurrency of the
//! run's size, next to the no-op server driven by the same generator and
//! to `redis-benchmark` running the cheapest Redis round trip a CastVote
//! needs. The queue is emptied between runs.

use tokio::process::Command;

use super::{Load, Process, Suite, cpu, ratio};

impl Suite {
    /// Writes the ingest table; returns the no-op server's calls/s at
    /// `c_mid`, the floor the sustained figure is compared with.
    pub(super) async fn ingest(&mut self, vote: &Process, noop: &Process, c_mid: usize) -> f64 {
        let size = self.size.clone();
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
        let mut floor_mid = 0.0;
        for &c in &size.concurrencies {
            let real = self
                .load_metered(
                    &format!("ingest c={c}"),
                    &[vote],
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
            if c == c_mid {
                self.goals.queued_vote_bytes = self.queued_vote_bytes().await;
            }
            self.redis
                .command(&["DEL", "votes"])
                .await
                .expect("DEL votes");
            let floor = self
                .load_metered(
                    &format!("no-op c={c}"),
                    &[noop],
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
        self.goals.lpush_floor_us = self.lpush_floor().await;
        floor_mid
    }

    /// The length of the newest queued vote, as the vote service pushed it.
    async fn queued_vote_bytes(&self) -> Option<u64> {
        let reply = self.redis.command(&["LINDEX", "votes", "0"]).await.ok()?;
        reply.strip_prefix('$')?.split("\r\n").next()?.parse().ok()
    }

    /// Redis CPU per pipelined `LPUSH` of a queued vote's size
    /// (`redis-benchmark -P 16`, 16 clients): the least Redis could spend
    /// queueing a vote, issue 21's Redis floor. `None` when
    /// redis-benchmark did not run (a problem says why).
    async fn lpush_floor(&mut self) -> Option<f64> {
        const KEY: &str = "bench:lpush-floor";
        let bytes = self.goals.queued_vote_bytes.unwrap_or(250);
        let pushes = self.size.redis_requests * 2;
        let payload = "x".repeat(bytes as usize);
        let meter = cpu::Meter::start(
            cpu::Group::one("redis", self.redis.pid())
                .into_iter()
                .collect(),
        );
        let output = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.redis.port().to_string()])
            .args(["-c", "16", "-P", "16", "-n", &pushes.to_string(), "-q"])
            .args(["LPUSH", KEY, &payload])
            .output()
            .await;
        let cost = meter.stop();
        let _ = self.redis.command(&["DEL", KEY]).await;
        match output {
            Ok(output) if output.status.success() => cost.per_thousand("redis", pushes),
            Ok(output) => {
                self.problems.push(format!(
                    "redis-benchmark LPUSH failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
                None
            }
            Err(error) => {
                self.problems
                    .push(format!("redis-benchmark not run ({error})"));
                None
            }
        }
    }

    /// `redis-benchmark` running `EVAL` of one `LPUSH` of a vote-sized
    /// message at concurrency `c`: requests per second.
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
}
