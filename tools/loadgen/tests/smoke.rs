//! The benchmark suite at tiny size, as CI runs it: everything starts,
//! every figure is produced, no call fails, and every vote the services
//! acknowledged is counted exactly once (votes acknowledged == rows in
//! `votes` == the tally, option by option). Timings are never asserted.
//!
//! It runs the services' binaries of this build profile (`cargo test
//! --workspace` builds them; when they are missing it builds them first).

use votemesh_loadgen::figures;

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_suite_runs_end_to_end_and_every_vote_is_counted_once() {
    figures::build_services(false, true).await;
    eprintln!("{}", figures::report::machine().await);
    let (report, problems) = figures::Suite::start(figures::Size::smoke())
        .await
        .run()
        .await;
    for heading in [
        "## CPU per vote, against each part's floor",
        "## Ingest",
        "## Sustained",
        "## Drain",
        "## Gateway",
        "## Freshness",
        "## Counts",
        "## Read",
        "## Footprint",
    ] {
        assert!(
            report.contains(heading),
            "no {heading} in the report:\n{report}"
        );
    }
    assert!(problems.is_empty(), "problems: {problems:#?}\n{report}");
    assert!(report.contains("Exact."), "counts not exact:\n{report}");
}
