//! `cargo bench -p votemesh-loadgen --bench soak`: the soak
//! ([`votemesh_loadgen::figures::soak`]): open-loop load through the
//! gateway for `SOAK_MINUTES` (default 30) at `SOAK_RATE` votes/s (default
//! 2,000) with the vote service frozen for 300 ms every 15 s
//! (`SOAK_FREEZE_EVERY_SECONDS`), then 1.5 x
//! capacity for `SOAK_OVERLOAD_SECONDS` (60) and a recovery; written to
//! `docs/SOAK.md` (`BENCH_OUT` elsewhere). It builds the services' release
//! binaries first (`BENCH_NO_BUILD=1` skips that). `BENCH_LOG_DIR=dir`
//! keeps each service's log in `dir/<name>.log` (warnings, and each
//! overload's start and end), to read a run's refusals against.

use std::{path::PathBuf, time::Instant};

use votemesh_loadgen::figures::{self, soak::SoakSize};

#[tokio::main]
async fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    if std::env::var_os("BENCH_NO_BUILD").is_none() {
        figures::build_services(true, false).await;
    }
    let started = Instant::now();
    let size = SoakSize::from_env();
    eprintln!("votemesh soak ({size:?})");
    let machine = figures::report::machine().await;
    let (body, problems) = figures::Suite::start(figures::Size::full())
        .await
        .soak(&size)
        .await;
    let took = started.elapsed();
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/SOAK.md"));
    let report = format!(
        "# Soak\n\nWritten by `cargo bench -p votemesh-loadgen --bench soak` in {:.0} min \
         ({size:?}); what it runs: `tools/loadgen/src/figures/soak.rs`. Goals and analysis: \
         [BENCHMARKS.md](BENCHMARKS.md#soak).\n\n{machine}\n\n{body}\n{}\n",
        took.as_secs_f64() / 60.0,
        if problems.is_empty() {
            "No check failed.".to_owned()
        } else {
            format!("**Checks that failed:**\n\n- {}", problems.join("\n- "))
        }
    );
    std::fs::write(&out, &report)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", out.display()));
    println!("{report}");
    eprintln!("wrote {}", out.display());
}
