//! The gateway binary's settings from the environment, as a compose or CI
//! file sets them: a variable set to the empty string is unset (its
//! default applies), and a malformed one stops the binary before it
//! starts, naming the variable. Every setting the binary reads has a case.

use std::collections::BTreeSet;

use clap::CommandFactory;
use votemesh_gateway::cli::Cli;
use votemesh_testing::process::{free_port, output_until, settings_command, through_line};

const STARTED: &str = "starting the gateway";

/// Runs the gateway with only `changes` set, until `until`.
async fn run(changes: &[(&str, &str)], until: &str) -> (Option<i32>, String) {
    let settings = votemesh::config::env_names(&Cli::command());
    let command = settings_command(
        env!("CARGO_BIN_EXE_votemesh-gateway"),
        settings,
        changes.iter().copied(),
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
    ];
    // Any text is a valid service name (and empty is unset).
    let free_text = ["OTEL_SERVICE_NAME"];
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
