//! The metrics table of docs/OBSERVABILITY.md names every metric the code
//! records, and nothing the code does not: operators build dashboards and
//! alerts from that table, so a metric added, renamed or removed in the
//! code must show there.
//!
//! Metric names are read from the product code: the `metrics` facade's
//! macros take the name as a literal, and the RPC and HTTP layers keep
//! theirs as literals in their own files; the table's names are the
//! backquoted names in its first column.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Where product code lives (tests, benches and tools record no metric
/// of the product).
const SOURCE_DIRS: [&str; 5] = [
    "src",
    "services/vote/src",
    "services/worker/src",
    "services/result/src",
    "gateway/src",
];

/// The files whose metric layers keep their names in constants rather than
/// in the macros' calls.
const NAMING_FILES: [&str; 2] = ["src/metrics.rs", "gateway/src/http_metrics.rs"];

/// Label names that share the metrics' prefixes.
const LABELS: [&str; 6] = [
    "rpc_service",
    "rpc_method",
    "rpc_grpc_status_code",
    "http_request_method",
    "http_route",
    "http_response_status_code",
];

/// Prefixes of every votemesh metric name.
const PREFIXES: [&str; 3] = ["votemesh_", "rpc_", "http_server_"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Whether `text` is a whole metric name of votemesh's.
fn is_metric_name(text: &str) -> bool {
    PREFIXES.iter().any(|prefix| text.starts_with(prefix))
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every metric name of `text`: the first argument of each `counter!`,
/// `gauge!` and `histogram!` given as a literal, and, in the files whose
/// layers name their metrics in constants ([`NAMING_FILES`]), every literal
/// that is a metric name.
fn names_recorded(file: &Path, text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for macro_call in ["counter!(", "gauge!(", "histogram!("] {
        for (at, _) in text.match_indices(macro_call) {
            let rest = text[at + macro_call.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                names.insert(literal.to_owned());
            }
        }
    }
    if NAMING_FILES.iter().any(|naming| file.ends_with(naming)) {
        names.extend(
            text.split('"')
                .skip(1)
                .step_by(2)
                .filter(|literal| is_metric_name(literal))
                .filter(|literal| !LABELS.contains(literal))
                .map(str::to_owned),
        );
    }
    names
}

/// Every metric name in the first column of the table's rows.
fn names_in_table(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .filter(|name| is_metric_name(name))
        .collect()
}

#[test]
fn the_metrics_table_names_exactly_the_metrics_the_code_records() {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&repo().join(dir), &mut files);
    }
    let recorded: BTreeSet<String> = files
        .iter()
        .flat_map(|file| names_recorded(file, &std::fs::read_to_string(file).unwrap()))
        .collect();
    let doc = std::fs::read_to_string(repo().join("docs/OBSERVABILITY.md")).unwrap();
    let documented = names_in_table(&doc);
    assert!(
        recorded.len() > 30,
        "the scan finds the metrics: {recorded:?}"
    );
    let undocumented: Vec<_> = recorded.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&recorded).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "recorded but missing from docs/OBSERVABILITY.md: {undocumented:?}; \
         in the table but recorded nowhere: {stale:?}"
    );
}
