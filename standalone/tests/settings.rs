//! Every setting of the all-in-one binary, read from the environment as a
//! compose or CI file writes it: an empty variable means unset (in
//! particular `DB_HOST=` and `REDIS_HOST=` keep the embedded SQLite file
//! and in-process queue), and a malformed one stops the binary at once
//! with an error naming it, before its banner says it is running. The
//! binary runs as a real process, stopped once its startup line shows what
//! it made of its settings.

use std::collections::BTreeSet;

use clap::CommandFactory;
use votemesh_standalone::cli::{self, Cli};
use votemesh_testing::process::{free_port, output_until, settings_command, through_line};

const PASSWORD: &str = "hunter2-secret";
/// What the binary logs once it has read its settings and bound its ports.
const STARTED: &str = "votemesh starting";
/// What its banner says once it runs.
const RUNNING: &str = "votemesh is running";

/// Settings that differ from every default, on hosts that do not resolve
/// and loopback ports chosen by the system.
fn base(redis_port: u16, db_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0".into()),
        ("VOTE_LISTEN_ADDR", "127.0.0.1:0".into()),
        ("WORKER_LISTEN_ADDR", "127.0.0.1:0".into()),
        ("RESULT_LISTEN_ADDR", "127.0.0.1:0".into()),
        ("REDIS_HOST", "redis.invalid".into()),
        ("REDIS_PORT", redis_port.to_string()),
        ("DB_HOST", "db.invalid".into()),
        ("DB_PORT", db_port.to_string()),
        ("DB_NAME", "votes".into()),
        ("DB_USER", "app".into()),
        ("DB_PASSWORD", PASSWORD.into()),
        ("OPTION_A", "Birds".into()),
        ("OPTION_B", "Fish".into()),
        ("EXTRA_OPTIONS", "c=Cows".into()),
        ("REFRESH_INTERVAL_MS", "40".into()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{redis_port}"),
        ),
        ("OTEL_SERVICE_NAME", "all-under-test".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".into()),
    ]
}

/// Runs the binary in `dir` with `base` and `changes` until `until`.
async fn run(
    dir: &std::path::Path,
    base: &[(&'static str, String)],
    changes: &[(&str, &str)],
    until: &str,
) -> (Option<i32>, String) {
    let env = base
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .chain(changes.iter().copied());
    let settings = votemesh::config::env_names(&Cli::command());
    let mut command = settings_command(env!("CARGO_BIN_EXE_votemesh"), settings, env);
    command.current_dir(dir);
    output_until(command, until).await
}

fn every_setting() -> BTreeSet<String> {
    votemesh::config::env_names(&Cli::command())
        .into_iter()
        .collect()
}

#[tokio::test]
async fn every_setting_set_to_the_empty_string_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base = base(rp, dp);
    let redis = format!("queue=redis://redis.invalid:{rp}/");
    let database = format!("database=postgres://app:***@db.invalid:{dp}/votes");
    let (_, started) = run(dir.path(), &base, &[], STARTED).await;
    for expected in [
        redis.as_str(),
        database.as_str(),
        "options=a=Birds, b=Fish, c=Cows",
        "refresh_interval=40ms",
        "service_name=all-under-test",
    ] {
        assert!(started.contains(expected), "{expected} in {started}");
    }

    // (variable set to "", what the output shows, what it must not show).
    // A listen address set empty binds the default port: the output names
    // it, whether the bind worked or the port was taken.
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "GATEWAY_LISTEN_ADDR",
            cli::DEFAULT_GATEWAY_LISTEN.into(),
            "invalid value",
        ),
        (
            "VOTE_LISTEN_ADDR",
            cli::DEFAULT_VOTE_LISTEN.into(),
            "invalid value",
        ),
        (
            "WORKER_LISTEN_ADDR",
            cli::DEFAULT_WORKER_LISTEN.into(),
            "invalid value",
        ),
        (
            "RESULT_LISTEN_ADDR",
            cli::DEFAULT_RESULT_LISTEN.into(),
            "invalid value",
        ),
        ("REDIS_URL", redis.clone(), "error"),
        ("REDIS_HOST", "queue=in-process queue".into(), "redis://"),
        (
            "REDIS_PORT",
            "queue=redis://redis.invalid:6379/".into(),
            "error",
        ),
        ("DATABASE_URL", database.clone(), "error"),
        (
            "DB_HOST",
            "database=sqlite://votemesh.sqlite?mode=rwc".into(),
            "postgres://",
        ),
        (
            "DB_PORT",
            "database=postgres://app:***@db.invalid:5432/votes".into(),
            "error",
        ),
        (
            "DB_NAME",
            format!("database=postgres://app:***@db.invalid:{dp}/postgres"),
            "error",
        ),
        (
            "DB_USER",
            format!("database=postgres://postgres:***@db.invalid:{dp}/votes"),
            "error",
        ),
        (
            "DB_PASSWORD",
            format!("database=postgres://app@db.invalid:{dp}/votes"),
            "***",
        ),
        ("OPTION_A", "options=a=Cats, b=Fish, c=Cows".into(), "Birds"),
        ("OPTION_B", "options=a=Birds, b=Dogs, c=Cows".into(), "Fish"),
        ("EXTRA_OPTIONS", "options=a=Birds, b=Fish ".into(), "Cows"),
        (
            "REFRESH_INTERVAL_MS",
            "refresh_interval=250ms".into(),
            "error",
        ),
        // Empty: the default text format, not an invalid value.
        ("LOG_FORMAT", " INFO ".into(), "\"level\""),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            redis.clone(),
            "exporting traces",
        ),
        (
            "OTEL_SERVICE_NAME",
            "service_name=votemesh-standalone".into(),
            "error",
        ),
        (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "queue_size=2048".into(),
            "invalid value",
        ),
    ];
    let covered: BTreeSet<String> = cases.iter().map(|case| case.0.to_owned()).collect();
    assert_eq!(covered, every_setting(), "every setting has a case");

    for (name, shows, hides) in cases {
        let (code, output) = run(dir.path(), &base, &[(name, "")], STARTED).await;
        assert!(
            output.contains(&shows) && !through_line(&output, STARTED).contains(hides),
            "{name}=\"\": expected {shows:?} and no {hides:?} (exit {code:?}):\n{output}"
        );
        assert!(!output.contains(PASSWORD), "{output}");
    }
}

#[tokio::test]
async fn empty_database_and_redis_hosts_keep_the_embedded_defaults_and_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base: Vec<(&'static str, String)> = base(rp, dp)
        .into_iter()
        .filter(|(name, _)| name.ends_with("LISTEN_ADDR"))
        .collect();
    let changes = [("DB_HOST", ""), ("REDIS_HOST", ""), ("DB_PASSWORD", "")];
    let banner = "queue: in-process queue; database: sqlite://votemesh.sqlite?mode=rwc";
    let (code, output) = run(dir.path(), &base, &changes, banner).await;
    assert!(
        output.contains(RUNNING) && output.contains(banner),
        "(exit {code:?}):\n{output}"
    );
}

/// What the banner says when its servers listen on loopback only.
const OPEN_UP: &str = "to let others in, set any of:";

#[tokio::test]
async fn on_loopback_it_says_how_to_let_other_machines_in() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base: Vec<(&'static str, String)> = base(rp, dp)
        .into_iter()
        .filter(|(name, _)| name.ends_with("LISTEN_ADDR"))
        .collect();
    // The banner's last line; the hint comes before it.
    let banner = "queue: in-process queue";
    let (code, output) = run(dir.path(), &base, &[], banner).await;
    let hint = output
        .lines()
        .find(|line| line.contains(OPEN_UP))
        .unwrap_or_else(|| panic!("(exit {code:?}):\n{output}"));
    for name in [
        "GATEWAY_LISTEN_ADDR",
        "VOTE_LISTEN_ADDR",
        "RESULT_LISTEN_ADDR",
        "WORKER_LISTEN_ADDR",
    ] {
        assert!(hint.contains(&format!("{name}=0.0.0.0:")), "{name}: {hint}");
    }

    // Listening on every address, there is nothing to open.
    let everywhere: Vec<(&'static str, String)> = base
        .iter()
        .map(|(name, _)| (*name, "0.0.0.0:0".to_owned()))
        .collect();
    let (_, output) = run(dir.path(), &everywhere, &[], banner).await;
    assert!(
        output.contains(banner) && !output.contains(OPEN_UP),
        "{output}"
    );
}

#[tokio::test]
async fn a_malformed_setting_stops_the_binary_naming_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base = base(rp, dp);
    let bad_redis_url = format!("redis://:{PASSWORD}@redis:99999/0");
    let bad_database_url = format!("mysql://app:{PASSWORD}@db/votes");
    let cases: Vec<(&str, &str)> = vec![
        ("GATEWAY_LISTEN_ADDR", "localhost"),
        ("VOTE_LISTEN_ADDR", "5000"),
        ("WORKER_LISTEN_ADDR", "0.0.0.0:99999"),
        ("RESULT_LISTEN_ADDR", "nope"),
        ("REDIS_URL", &bad_redis_url),
        ("REDIS_HOST", "redis host"),
        ("REDIS_PORT", "abc"),
        ("DATABASE_URL", &bad_database_url),
        ("DB_HOST", "db:5432"),
        ("DB_PORT", "99999"),
        ("OPTION_A", "   "),
        ("OPTION_B", "\t"),
        ("EXTRA_OPTIONS", "c=Cows,d"),
        ("REFRESH_INTERVAL_MS", "fast"),
        ("LOG_FORMAT", "xml"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
    ];
    // Any text is a valid value of these (and empty is unset).
    let free_text = ["DB_NAME", "DB_USER", "DB_PASSWORD", "OTEL_SERVICE_NAME"];
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|case| case.0)
        .chain(free_text)
        .map(str::to_owned)
        .collect();
    assert_eq!(covered, every_setting(), "every setting has a case");

    for (name, value) in cases {
        let (code, output) = run(dir.path(), &base, &[(name, value)], RUNNING).await;
        assert_eq!(code, Some(2), "{name}={value}: a usage error:\n{output}");
        assert!(
            output.contains(&format!("<{name}>")),
            "{name}={value}: the error names the variable:\n{output}"
        );
        assert!(
            !output.contains(RUNNING) && !output.contains(STARTED),
            "{output}"
        );
        assert!(!output.contains(PASSWORD), "{output}");
    }
}

/// The all-in-one binary runs on jemalloc with the shared settings
/// (`votemesh::allocator`), as the gateway and the vote service it holds do.
#[cfg(feature = "jemalloc")]
#[tokio::test]
async fn the_binary_runs_on_jemalloc_with_the_shared_settings() {
    votemesh_testing::process::assert_runs_on_jemalloc(
        env!("CARGO_BIN_EXE_votemesh"),
        votemesh::allocator::MALLOC_CONF,
    )
    .await;
}
