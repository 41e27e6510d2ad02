//! Every setting of the worker binary, read from the environment as a
//! compose or CI file writes it: an empty variable means unset (the
//! default applies, nothing built from the other settings changes), and a
//! malformed one stops the binary at once with an error naming it, before
//! it logs anything. The binary runs as a real process; it is stopped as
//! soon as its startup line shows what it made of its settings.

use std::collections::BTreeSet;

use clap::CommandFactory;
use votemesh_testing::process::{free_port, output_until, settings_command, through_line};
use votemesh_worker::cli::Cli;

const PASSWORD: &str = "hunter2-secret";
/// What the worker logs once it has read its settings.
const STARTED: &str = "starting the worker";

/// Settings that differ from every default, on hosts that do not resolve
/// and ports where nothing listens, so no run reaches a real server.
fn base(redis_port: u16, db_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_HOST", "redis.invalid".into()),
        ("REDIS_PORT", redis_port.to_string()),
        ("DB_HOST", "db.invalid".into()),
        ("DB_PORT", db_port.to_string()),
        ("DB_NAME", "votes".into()),
        ("DB_USER", "app".into()),
        ("DB_PASSWORD", PASSWORD.into()),
        ("WORKER_ID", "w-test".into()),
        ("BATCH_SIZE", "7".into()),
        ("BATCH_LINGER_MS", "9".into()),
        ("WORKER_LISTEN_ADDR", "127.0.0.1:0".into()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{redis_port}"),
        ),
        ("OTEL_SERVICE_NAME", "worker-under-test".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".into()),
    ]
}

/// Runs the worker with `base` and `changes` (and `args`) until `until`.
async fn run(
    base: &[(&'static str, String)],
    changes: &[(&str, &str)],
    args: &[&str],
    until: &str,
) -> (Option<i32>, String) {
    let env = base
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .chain(changes.iter().copied());
    let settings = votemesh::config::env_names(&Cli::command());
    let mut command = settings_command(env!("CARGO_BIN_EXE_votemesh-worker"), settings, env);
    command.args(args);
    output_until(command, until).await
}

#[tokio::test]
async fn every_setting_set_to_the_empty_string_is_unset() {
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base = base(rp, dp);
    let (_, started) = run(&base, &[], &[], STARTED).await;
    for expected in [
        "worker_id=w-test",
        &format!("redis=redis://redis.invalid:{rp}/"),
        &format!("database=postgres://app:***@db.invalid:{dp}/votes"),
        "batch_size=7",
        "batch_linger_ms=9",
        "service_name=worker-under-test",
    ] {
        assert!(started.contains(expected), "{expected} in {started}");
    }

    let default_worker_id = format!("worker_id={}-", votemesh::config::instance_name());
    // (variable set to "", extra flags, what the output shows, what it must not show)
    let cases: Vec<(&str, &[&str], String, &str)> = vec![
        (
            "REDIS_URL",
            &[],
            format!("redis=redis://redis.invalid:{rp}/"),
            "error",
        ),
        (
            "REDIS_HOST",
            &[],
            format!("redis=redis://127.0.0.1:{rp}/"),
            "redis.invalid",
        ),
        (
            "REDIS_PORT",
            &[],
            "redis=redis://redis.invalid:6379/".into(),
            "error",
        ),
        // The queue's spread: empty is one Redis, one shard.
        (
            "REDIS_CLUSTER_NODES",
            &[],
            format!("redis=redis://redis.invalid:{rp}/"),
            "sharded",
        ),
        (
            "QUEUE_SHARDS",
            &[],
            format!("redis=redis://redis.invalid:{rp}/"),
            "sharded",
        ),
        (
            "REDIS_REPLICA_ACKS",
            &[],
            format!("redis=redis://redis.invalid:{rp}/"),
            "invalid value",
        ),
        (
            "DATABASE_URL",
            &[],
            format!("database=postgres://app:***@db.invalid:{dp}/votes"),
            "error",
        ),
        (
            "DB_HOST",
            &[],
            format!("database=postgres://app:***@127.0.0.1:{dp}/votes"),
            "postgres://:",
        ),
        (
            "DB_PORT",
            &[],
            "database=postgres://app:***@db.invalid:5432/votes".into(),
            "error",
        ),
        // Empty: the one database of DB_HOST, not several.
        (
            "DB_HOSTS",
            &[],
            format!("database=postgres://app:***@db.invalid:{dp}/votes"),
            "error",
        ),
        (
            "DB_NAME",
            &[],
            format!("database=postgres://app:***@db.invalid:{dp}/postgres"),
            "error",
        ),
        (
            "DB_USER",
            &[],
            format!("database=postgres://postgres:***@db.invalid:{dp}/votes"),
            "error",
        ),
        (
            "DB_PASSWORD",
            &[],
            format!("database=postgres://app@db.invalid:{dp}/votes"),
            "***",
        ),
        ("WORKER_ID", &[], default_worker_id, "w-test"),
        (
            "BATCH_SIZE",
            &[],
            format!("batch_size={}", votemesh_worker::DEFAULT_BATCH_SIZE),
            "error",
        ),
        (
            "BATCH_LINGER_MS",
            &[],
            format!(
                "batch_linger_ms={}",
                votemesh_worker::DEFAULT_BATCH_LINGER.as_millis()
            ),
            "invalid value",
        ),
        // Empty: the default text format, not an invalid value.
        ("LOG_FORMAT", &[], " INFO ".into(), "\"level\""),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &[],
            format!("redis=redis://redis.invalid:{rp}/"),
            "exporting traces",
        ),
        (
            "OTEL_SERVICE_NAME",
            &[],
            "service_name=votemesh-worker".into(),
            "error",
        ),
        (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            &[],
            "queue_size=2048".into(),
            "invalid value",
        ),
        // Mutual TLS: one file of three set to "" is unset like the others
        // (plaintext); the health listener is only used with TLS.
        ("TLS_CERT_FILE", &[], "batch_size=7".into(), "error"),
        ("TLS_KEY_FILE", &[], "batch_size=7".into(), "error"),
        ("TLS_CA_FILE", &[], "batch_size=7".into(), "error"),
        ("TLS_ALLOWED_CLIENTS", &[], "batch_size=7".into(), "error"),
        (
            "HEALTH_LISTEN_ADDR",
            &[],
            "batch_size=7".into(),
            "invalid value",
        ),
        // Admission: empty is the default, not an invalid value.
        ("MAX_IN_FLIGHT", &[], "batch_size=7".into(), "invalid value"),
        ("MAX_WAITING", &[], "batch_size=7".into(), "invalid value"),
        (
            "MAX_QUEUE_WAIT_MS",
            &[],
            "batch_size=7".into(),
            "invalid value",
        ),
        (
            "OVERLOAD_AFTER_MS",
            &[],
            "batch_size=7".into(),
            "invalid value",
        ),
        (
            "OVERLOADED_QUEUE_WAIT_MS",
            &[],
            "batch_size=7".into(),
            "invalid value",
        ),
        // The listen address: asking a running worker at the default.
        (
            "WORKER_LISTEN_ADDR",
            &["--health-check"],
            "127.0.0.1:8080".into(),
            "invalid value",
        ),
    ];
    let covered: BTreeSet<String> = cases.iter().map(|case| case.0.to_owned()).collect();
    let every: BTreeSet<String> = votemesh::config::env_names(&Cli::command())
        .into_iter()
        .collect();
    assert_eq!(covered, every, "every setting of the worker has a case");

    for (name, args, shows, hides) in cases {
        // Asking a running worker prints one line and exits: wait for the
        // part that matters, not the first word (the line may arrive cut).
        let until = if args.is_empty() {
            STARTED
        } else {
            shows.as_str()
        };
        let (code, output) = run(&base, &[(name, "")], args, until).await;
        assert!(
            output.contains(&shows) && !through_line(&output, until).contains(hides),
            "{name}=\"\": expected {shows:?} and no {hides:?} (exit {code:?}):\n{output}"
        );
        assert!(!output.contains(PASSWORD), "{output}");
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_the_binary_naming_its_variable() {
    let (rp, dp) = (free_port().await.unwrap(), free_port().await.unwrap());
    let base = base(rp, dp);
    let bad_redis_url = format!("redis://:{PASSWORD}@redis:99999/0");
    let bad_database_url = format!("mysql://app:{PASSWORD}@db/votes");
    let cases: Vec<(&str, &str)> = vec![
        ("REDIS_URL", &bad_redis_url),
        ("REDIS_HOST", "redis host"),
        ("REDIS_PORT", "abc"),
        ("REDIS_CLUSTER_NODES", "redis-0"),
        ("QUEUE_SHARDS", "0"),
        ("REDIS_REPLICA_ACKS", "-1"),
        ("DATABASE_URL", &bad_database_url),
        ("DB_HOST", "db:5432"),
        ("DB_PORT", "99999"),
        ("DB_HOSTS", "pg-0:5432,pg-1:0"),
        ("BATCH_SIZE", "-1"),
        ("BATCH_LINGER_MS", "soon"),
        ("LOG_FORMAT", "xml"),
        ("WORKER_LISTEN_ADDR", "nope"),
        ("HEALTH_LISTEN_ADDR", "nope"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_WAITING", "-1"),
        ("MAX_QUEUE_WAIT_MS", "soon"),
        ("OVERLOAD_AFTER_MS", "-5"),
        ("OVERLOADED_QUEUE_WAIT_MS", "briefly"),
    ];
    // Any text is a valid value of these (and empty is unset).
    let free_text = [
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "WORKER_ID",
        "OTEL_SERVICE_NAME",
        // Paths and names: what they hold is checked when they are read
        // (gateway/tests/settings.rs has the cases).
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_CA_FILE",
        "TLS_ALLOWED_CLIENTS",
    ];
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|case| case.0)
        .chain(free_text)
        .map(str::to_owned)
        .collect();
    let every: BTreeSet<String> = votemesh::config::env_names(&Cli::command())
        .into_iter()
        .collect();
    assert_eq!(covered, every, "every setting of the worker has a case");

    for (name, value) in cases {
        let (code, output) = run(&base, &[(name, value)], &[], STARTED).await;
        assert_eq!(code, Some(2), "{name}={value}: a usage error:\n{output}");
        assert!(
            output.contains(&format!("<{name}>")),
            "{name}={value}: the error names the variable:\n{output}"
        );
        assert!(!output.contains(STARTED), "{output}");
        assert!(!output.contains(PASSWORD), "{output}");
    }
}
