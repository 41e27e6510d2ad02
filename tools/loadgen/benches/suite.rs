//! `cargo bench -p votemesh-loadgen`: the whole benchmark suite at full
//! size (see `figures/mod.rs`), written to `docs/BENCHMARKS.md`.
//!
//! It first builds the services' release binaries (`cargo build --release
//! --bins -p votemesh-vote ...`; `BENCH_NO_BUILD=1` skips that), then
//! measures. `BENCH_SECONDS` (default 5, per load run),
//! `BENCH_DRAIN_VOTES` / `BENCH_DRAIN_VOTERS` (default 1,000,000 from
//! 100,000) and `BENCH_READ_VOTES` (default 10,000,000) change its size;
//! `BENCH_OUT` writes the report elsewhere.

// The smoke test's tiny size goes unused here.
#[allow(dead_code)]
mod figures;

use std::{path::PathBuf, time::Instant};

#[tokio::main]
async fn main() {
    // cargo bench passes --bench; there is nothing to filter.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    if std::env::var_os("BENCH_NO_BUILD").is_none() {
        figures::build_services(true, false).await;
    }
    let started = Instant::now();
    let size = figures::Size::full();
    eprintln!("votemesh benchmark suite ({size:?})");
    let machine = figures::machine().await;
    let (body, problems) = figures::Suite::start(size.clone()).await.run().await;
    let took = started.elapsed();
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md")
        });
    let problems_text = if problems.is_empty() {
        "None: no call failed and every count is exact.".to_owned()
    } else {
        problems
            .iter()
            .map(|p| format!("- {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let report = format!(
        "# votemesh benchmarks\n\n\
         Written by `cargo bench -p votemesh-loadgen` (the suite in \
         `tools/loadgen/benches/`; docs/LOADGEN.md says how to run it). \
         Each figure stands next to its ceiling or peer measured in \
         the same run on the same machine: read the ratios, not the absolute numbers. \
         Real redis-server and PostgreSQL started by the test harness, the services' \
         release binaries as separate processes, load from the `votemesh-loadgen` \
         binary.\n\n\
         {machine}\
         - Size: {} s per load run, drain {} votes from {} voters, read at {:?} stored votes; \
         the whole run took {:.0} s\n\n\
         {body}\n\n## Problems seen in this run\n\n{problems_text}\n",
        size.run.as_secs_f64(),
        size.drain_votes,
        size.drain_voters,
        size.read_votes,
        took.as_secs_f64()
    );
    std::fs::write(&out, &report)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", out.display()));
    println!("{report}");
    eprintln!("wrote {}", out.display());
}
