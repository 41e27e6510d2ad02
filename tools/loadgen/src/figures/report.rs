//! The report the suite writes (`docs/BENCHMARKS.md`): its head (what
//! was measured, on what machine, from which code, at what size), the
//! figures' body that [`super::Suite::run`] returns, and the problems seen;
//! [`splice`] puts it between the markers of the document it goes into,
//! so the analyses written around it by hand stay.

/// Where the suite's part of a document begins...
pub const BEGIN_MARKER: &str =
    "<!-- cargo bench -p votemesh-loadgen: the suite's report begins -->";
/// ...and ends. Everything outside the two is written by hand.
pub const END_MARKER: &str = "<!-- the suite's report ends -->";

/// `report` in place of what lies between the markers of `document`; a
/// document without both (or none at all) becomes a title and the report.
pub fn splice(document: Option<&str>, report: &str) -> String {
    let region = format!("{BEGIN_MARKER}\n\n{}\n{END_MARKER}", report.trim_end());
    if let Some(document) = document
        && let Some(begin) = document.find(BEGIN_MARKER)
        && let Some(end) = document[begin..].find(END_MARKER)
    {
        let end = begin + end + END_MARKER.len();
        return format!("{}{region}{}", &document[..begin], &document[end..]);
    }
    format!("# votemesh benchmarks\n\n{region}\n")
}

use std::{fmt::Write as _, time::Duration};

use tokio::process::Command;

use super::Size;

/// The whole report: the head, the figures' `body`, and `problems`
/// (none: the run was clean). `machine` is [`machine`]'s text; `took` is
/// how long the whole run took.
pub fn document(
    size: &Size,
    machine: &str,
    body: &str,
    problems: &[String],
    took: Duration,
) -> String {
    let problems_text = if problems.is_empty() {
        "None: no call failed and every count is exact.".to_owned()
    } else {
        problems
            .iter()
            .map(|p| format!("- {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "Written by `cargo bench -p votemesh-loadgen --bench suite` (the suite in \
         `tools/loadgen/src/figures/`; docs/LOADGEN.md says how to run it). \
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
    )
}

/// The machine and the code measured, for the report's head.
pub async fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|value| value.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(|value| value.trim().to_owned())
        .unwrap_or_default();
    let git = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            Command::new("git")
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .await
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        }
    };
    // Paths relative to this crate: the workspace's product code.
    let product = [
        "../../src",
        "../../services",
        "../../gateway",
        "../../proto",
    ];
    let commit = git(&["log", "-1", "--format=%h %s"]).await;
    let product_commit =
        git(&[&["log", "-1", "--format=%h %s", "--"][..], &product[..]].concat()).await;
    let dirty = !git(&[
        &["status", "--porcelain", "--untracked-files=no", "--"][..],
        &product[..],
    ]
    .concat())
    .await
    .is_empty();
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // Each service runs in a session of its own (figures::session), so
    // the figures should not depend on it; said all the same.
    let autogroups = match std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .map(|value| value.trim().to_owned())
        .as_deref()
    {
        Ok("1") => "on",
        Ok(_) => "off",
        Err(_) => "not in this kernel",
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "- Machine: {cores} cores, {model}, {memory} memory; the scheduler's autogroups \
         {autogroups}"
    );
    let _ = writeln!(
        text,
        "- Code measured: the services at commit `{product_commit}` (the last one touching \
         `src/`, `services/`, `gateway/`, `proto/`){}; the suite and the generator at `{commit}`",
        if dirty {
            ", with uncommitted changes there"
        } else {
            ""
        }
    );
    let _ = writeln!(
        text,
        "- {redis}; PostgreSQL from the test harness (fsync off)"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_replaces_only_what_lies_between_the_markers() {
        let document = format!(
            "# Title\n\nBy hand, before.\n\n{BEGIN_MARKER}\n\nold figures\n{END_MARKER}\n\nBy hand, after.\n"
        );
        let spliced = splice(Some(&document), "new figures\n");
        assert_eq!(
            spliced,
            format!(
                "# Title\n\nBy hand, before.\n\n{BEGIN_MARKER}\n\nnew figures\n{END_MARKER}\n\nBy hand, after.\n"
            )
        );
        // Spliced again, the same: nothing accumulates.
        assert_eq!(splice(Some(&spliced), "new figures\n"), spliced);
    }

    #[test]
    fn a_document_without_markers_becomes_a_title_and_the_report() {
        for document in [None, Some("no markers here")] {
            let spliced = splice(document, "figures");
            assert!(spliced.starts_with("# votemesh benchmarks\n\n"));
            assert!(spliced.contains(&format!("{BEGIN_MARKER}\n\nfigures\n{END_MARKER}")));
        }
    }
}
