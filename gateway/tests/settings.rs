//! The gateway binary's settings from the environment, as a compose or CI
//! file sets them: a variable set to the empty string is unset (its
//! default applies), and a malformed one stops the binary before it
//! starts, naming the variable. Every setting the binary reads has a case.

use std::collections::BTreeSet;

use clap::CommandFactory;
use votemesh_gateway::cli::Cli;
use votemesh_testing::process::{free_port, output_until, settings_command, through_line};

const STARTED: &str = "starting the gateway";

/// Runs the gateway with only `changes` set, until `until`; its operator
/// port on any free loopback port unless `changes` set it.
async fn run(changes: &[(&str, &str)], until: &str) -> (Option<i32>, String) {
    let settings = votemesh::config::env_names(&Cli::command());
    let admin = ("GATEWAY_ADMIN_LISTEN_ADDR", "127.0.0.1:0");
    let admin_set = changes.iter().any(|(name, _)| *name == admin.0);
    let command = settings_command(
        env!("CARGO_BIN_EXE_votemesh-gateway"),
        settings,
        changes.iter().copied().chain((!admin_set).then_some(admin)),
    );
    output_until(command, until).await
}

fn every_setting() -> BTreeSet<String> {
    votemesh::config::env_names(&Cli::command())
        .into_iter()
        .collect()
}

#[tokio::test]
async fn every_setting_set_to_the_empty_string_is_unset() {
    let port = free_port().await.unwrap();
    let listen = format!("127.0.0.1:{port}");
    // (variable set to "", what the output shows, what it must not show).
    let cases: Vec<(&str, &str, &str)> = vec![
        ("GATEWAY_LISTEN_ADDR", STARTED, "invalid value"),
        ("VOTE_ADDR", "vote=http://127.0.0.1:5000", "invalid value"),
        (
            "RESULT_ADDR",
            "result=http://127.0.0.1:5001",
            "invalid value",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", STARTED, "exporting traces"),
        ("OTEL_SERVICE_NAME", STARTED, "invalid value"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", STARTED, "invalid value"),
        ("LOG_FORMAT", " INFO ", "\"level\""),
        // One file of three set to "" is unset like the others: plaintext.
        ("TLS_CERT_FILE", STARTED, "invalid value"),
        ("TLS_KEY_FILE", STARTED, "invalid value"),
        ("TLS_CA_FILE", STARTED, "invalid value"),
        ("VOTE_RATE_LIMIT", STARTED, "invalid value"),
        ("VOTE_RATE_BURST", STARTED, "invalid value"),
        ("TRUSTED_PROXIES", STARTED, "invalid value"),
        ("GATEWAY_ADMIN_LISTEN_ADDR", STARTED, "invalid value"),
        ("MAX_IN_FLIGHT", STARTED, "invalid value"),
        ("MAX_WAITING", STARTED, "invalid value"),
        ("MAX_QUEUE_WAIT_MS", STARTED, "invalid value"),
        ("OVERLOAD_AFTER_MS", STARTED, "invalid value"),
        ("OVERLOADED_QUEUE_WAIT_MS", STARTED, "invalid value"),
        ("MAX_CONNECTIONS", STARTED, "invalid value"),
        ("HEADER_READ_TIMEOUT_MS", STARTED, "invalid value"),
        ("RESULTS_MAX_STREAMS", STARTED, "invalid value"),
        ("RESULTS_MIN_INTERVAL_MS", STARTED, "invalid value"),
    ];
    let covered: BTreeSet<String> = cases.iter().map(|case| case.0.to_owned()).collect();
    assert_eq!(covered, every_setting(), "every setting has a case");
    for (name, shows, hides) in cases {
        let mut changes = vec![(name, "")];
        if name != "GATEWAY_LISTEN_ADDR" {
            changes.push(("GATEWAY_LISTEN_ADDR", &listen));
        }
        let (code, output) = run(&changes, shows).await;
        assert!(
            output.contains(shows) && !through_line(&output, STARTED).contains(hides),
            "{name}=\"\": expected {shows:?} and no {hides:?} (exit {code:?}):\n{output}"
        );
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_the_binary_naming_its_variable() {
    let cases: Vec<(&str, &str)> = vec![
        ("GATEWAY_LISTEN_ADDR", "localhost"),
        ("VOTE_ADDR", "vote:5000"),
        ("RESULT_ADDR", "ftp://result"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("LOG_FORMAT", "xml"),
        ("VOTE_RATE_LIMIT", "many"),
        ("VOTE_RATE_BURST", "-1"),
        ("TRUSTED_PROXIES", "10.0.0.1,proxy.example"),
        ("GATEWAY_ADMIN_LISTEN_ADDR", "8081"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_WAITING", "-1"),
        ("MAX_QUEUE_WAIT_MS", "soon"),
        ("OVERLOAD_AFTER_MS", "-5"),
        ("OVERLOADED_QUEUE_WAIT_MS", "briefly"),
        ("MAX_CONNECTIONS", "0"),
        ("HEADER_READ_TIMEOUT_MS", "0"),
        ("RESULTS_MAX_STREAMS", "0"),
        ("RESULTS_MIN_INTERVAL_MS", "60001"),
    ];
    // Any text is a valid service name (and empty is unset); the TLS
    // files are paths, checked when read (the test below).
    let free_text = [
        "OTEL_SERVICE_NAME",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_CA_FILE",
    ];
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|case| case.0)
        .chain(free_text)
        .map(str::to_owned)
        .collect();
    assert_eq!(covered, every_setting(), "every setting has a case");
    for (name, value) in cases {
        let (code, output) = run(&[(name, value)], STARTED).await;
        assert_eq!(code, Some(2), "{name}={value}: a usage error:\n{output}");
        assert!(
            output.contains(&format!("<{name}>")),
            "{name}={value}: the error names the variable:\n{output}"
        );
        assert!(!output.contains(STARTED), "{name}={value}: nothing started");
    }
}

#[tokio::test]
async fn a_partial_or_unreadable_tls_identity_stops_the_binary_naming_it() {
    let port = free_port().await.unwrap();
    let listen = format!("127.0.0.1:{port}");
    let listen = ("GATEWAY_LISTEN_ADDR", listen.as_str());
    let (code, output) = run(
        &[listen, ("TLS_CERT_FILE", "/nonexistent/tls.crt")],
        "never",
    )
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("TLS_KEY_FILE, TLS_CA_FILE"),
        "names what is missing: {output}"
    );
    let (code, output) = run(
        &[
            listen,
            ("TLS_CERT_FILE", "/nonexistent/tls.crt"),
            ("TLS_KEY_FILE", "/nonexistent/tls.key"),
            ("TLS_CA_FILE", "/nonexistent/ca.crt"),
        ],
        "never",
    )
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("cannot read /nonexistent/tls.crt"),
        "{output}"
    );
}
