//! `cargo bench -p votemesh-loadgen --bench streams`: the live results
//! streams figure ([`votemesh_loadgen::figures::streams`]): `BENCH_STREAMS`
//! (default 10,000) SSE streams held open on one gateway while votes
//! arrive at each of `BENCH_STREAMS_RATES` (default 50, 500, 5,000 a
//! second): the gateway's memory per stream, its CPU against the same
//! load with no stream open, and how soon every stream shows the final
//! tally. It builds the services' release binaries first
//! (`BENCH_NO_BUILD=1` skips that); the report goes to stdout, and to
//! `BENCH_OUT` when set. A smoke run: `BENCH_STREAMS=500
//! BENCH_STREAMS_RATES=50 BENCH_STREAMS_SECONDS=3`.

use std::time::Instant;

use votemesh_loadgen::figures::{self, streams::StreamsSize};

#[tokio::main]
async fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    if std::env::var_os("BENCH_NO_BUILD").is_none() {
        figures::build_services(true, false).await;
    }
    let started = Instant::now();
    let size = StreamsSize::from_env();
    eprintln!("votemesh live results streams ({size:?})");
    let machine = figures::report::machine().await;
    let (body, problems) = figures::Suite::start(figures::Size::full())
        .await
        .streams(&size)
        .await;
    let report = format!(
        "# Live results streams\n\nWritten by `cargo bench -p votemesh-loadgen --bench streams` \
         in {:.1} min ({size:?}); what it runs: `tools/loadgen/src/figures/streams.rs`.\n\n\
         {machine}\n{body}\n\n{}\n",
        started.elapsed().as_secs_f64() / 60.0,
        if problems.is_empty() {
            "No check failed.".to_owned()
        } else {
            format!("**Checks that failed:**\n\n- {}", problems.join("\n- "))
        }
    );
    if let Some(out) = std::env::var_os("BENCH_OUT") {
        std::fs::write(&out, &report).unwrap_or_else(|error| {
            panic!(
                "cannot write {}: {error}",
                std::path::Path::new(&out).display()
            )
        });
    }
    println!("{report}");
}
