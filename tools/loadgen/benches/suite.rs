//! `cargo bench -p votemesh-loadgen --bench suite`: the whole benchmark suite at full
//! size (the library's [`votemesh_loadgen::figures`]), written to
//! `docs/BENCHMARKS.md`.
//!
//! It first builds the services' release binaries (`cargo build --release
//! --bins -p votemesh-vote ...`; `BENCH_NO_BUILD=1` skips that), then
//! measures. `BENCH_SECONDS` (default 5, per load run),
//! `BENCH_DRAIN_VOTES` / `BENCH_DRAIN_VOTERS` (default 1,000,000 from
//! 100,000) and `BENCH_READ_VOTES` (default 10,000,000) change its size;
//! `BENCH_OUT` writes the report elsewhere. Only the part between the
//! report's markers is replaced ([`figures::report::splice`]): the
//! analyses around it are written by hand.

use std::{path::PathBuf, time::Instant};

use votemesh_loadgen::figures;

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
    let machine = figures::report::machine().await;
    let (body, problems) = figures::Suite::start(size.clone()).await.run().await;
    let took = started.elapsed();
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md")
        });
    let report = figures::report::document(&size, &machine, &body, &problems, took);
    let document = std::fs::read_to_string(&out).ok();
    let written = figures::report::splice(document.as_deref(), &report);
    std::fs::write(&out, &written)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", out.display()));
    println!("{report}");
    eprintln!("wrote {}", out.display());
}
