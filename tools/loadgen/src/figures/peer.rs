//! Peer: the gateway's form vote next to the original Python vote app's,
//! both driven by `wrk`, when one is running (`BENCH_PEER_VOTE_URL`).

use std::{path::Path, time::Duration};

use tokio::process::Command;

use super::{Process, Suite, ratio};

impl Suite {
    /// The gateway's form vote next to the original Python vote app's (its
    /// `POST /` with the same form), both driven by `wrk` at the same
    /// concurrency, the worker paused (the Python app has none in its
    /// path either). The peer runs outside the suite: its address is
    /// `BENCH_PEER_VOTE_URL` (docs/LOADGEN.md).
    pub(super) async fn peer(&mut self, gateway: &Process, peer: &str) {
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
}

pub(super) fn peer_url() -> Option<String> {
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
