//! The README's examples, run as written against a running system (only
//! the ports differ): its grpcurl lines by a client that knows nothing but
//! what server reflection tells it, as grpcurl does
//! (`tools/deploy-checks/grpcurl_like.py`), and its curl lines by curl.
//! The ports the README uses, in its examples and in "Run it", must be the
//! ones the local run listens on by default (`votemesh_standalone::cli`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use votemesh_standalone::cli::{
    DEFAULT_GATEWAY_LISTEN, DEFAULT_RESULT_LISTEN, DEFAULT_VOTE_LISTEN, DEFAULT_WORKER_LISTEN,
};
use votemesh_testing::probe;

mod support;

use support::{System, WAIT, cats_and_dogs};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One `grpcurl -plaintext [-d JSON] HOST:PORT METHOD` line of the README.
#[derive(Debug)]
struct Example {
    data: Option<String>,
    port: u16,
    method: String,
}

/// The port of one of the local run's default listen addresses.
fn port(listen: &str) -> u16 {
    listen.parse::<SocketAddr>().unwrap().port()
}

/// The README's "Run it" section.
fn run_it(readme: &str) -> &str {
    let start = readme.find("## Run it").expect("a \"Run it\" section");
    let rest = &readme[start + 2..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn the_readme_names_the_ports_the_local_run_listens_on() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let run_it = run_it(&readme);
    for (what, listen) in [
        ("gateway", DEFAULT_GATEWAY_LISTEN),
        ("vote service", DEFAULT_VOTE_LISTEN),
        ("result service", DEFAULT_RESULT_LISTEN),
        ("worker", DEFAULT_WORKER_LISTEN),
    ] {
        let local = format!("localhost:{}", port(listen));
        assert!(
            run_it.contains(&local),
            "\"Run it\" names the {what} at {local}:\n{run_it}"
        );
    }
    let defaults = [
        DEFAULT_GATEWAY_LISTEN,
        DEFAULT_VOTE_LISTEN,
        DEFAULT_RESULT_LISTEN,
        DEFAULT_WORKER_LISTEN,
    ]
    .map(port);
    for example in examples(&readme) {
        assert!(
            defaults.contains(&example.port),
            "{example:?}: not a port the local run listens on ({defaults:?})"
        );
    }
    for line in curl_lines(&readme) {
        assert!(
            line.contains(&format!("localhost:{}/", port(DEFAULT_GATEWAY_LISTEN))),
            "{line}: not the local run's gateway"
        );
    }
}

/// The lines of the README's code blocks (its prose may start a line with
/// "curl" too).
fn code_lines(readme: &str) -> Vec<&str> {
    let mut in_code = false;
    readme
        .lines()
        .map(str::trim)
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
                return false;
            }
            in_code
        })
        .collect()
}

/// The README's curl lines.
fn curl_lines(readme: &str) -> Vec<&str> {
    code_lines(readme)
        .into_iter()
        .filter(|line| line.starts_with("curl "))
        .collect()
}

fn examples(readme: &str) -> Vec<Example> {
    code_lines(readme)
        .into_iter()
        .filter_map(|line| line.strip_prefix("grpcurl -plaintext "))
        .map(|rest| {
            let rest = rest.split(" #").next().unwrap_or(rest).trim();
            let (data, rest) = match rest.strip_prefix("-d '") {
                Some(quoted) => {
                    let (json, rest) = quoted.split_once("' ").expect("a closing quote");
                    (Some(json.to_owned()), rest)
                }
                None => (None, rest),
            };
            let mut words = rest.split_whitespace();
            let address = words.next().expect("an address");
            let method = words.next().expect("a method or `list`").to_owned();
            let port = address.rsplit(':').next().unwrap().parse().unwrap();
            Example { data, port, method }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpcurl_example_in_the_readme_works_by_reflection() {
    let python = repo().join("target/deploy-tools/bin/python");
    assert!(
        python.is_file(),
        "install the checkers first: python3 -m venv target/deploy-tools && \
         target/deploy-tools/bin/pip install -r tools/deploy-checks/requirements.txt"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(
        examples.len() >= 8,
        "the README shows its grpcurl examples: {examples:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_and_dogs()).await;
    let addrs = system.addrs;

    let run = |example: &Example| {
        let addr = match example.port {
            port if port == self::port(DEFAULT_VOTE_LISTEN) => addrs.vote,
            port if port == self::port(DEFAULT_RESULT_LISTEN) => addrs.result,
            port if port == self::port(DEFAULT_WORKER_LISTEN) => addrs.worker,
            other => panic!("the README calls port {other}, where the local run has no service"),
        };
        let mut command = Command::new(&python);
        command
            .arg(repo().join("tools/deploy-checks/grpcurl_like.py"))
            .arg(addr.to_string())
            .arg(&example.method);
        if let Some(data) = &example.data {
            command.arg(data);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{example:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut cast = false;
    for example in &examples {
        let output = tokio::task::block_in_place(|| run(example));
        match example.method.as_str() {
            "votemesh.v1.VoteService/CastVote" => {
                assert!(output.contains("\"vote_id\""), "{output}");
                cast = true;
            }
            "list" => assert!(output.contains("votemesh.v1.VoteService"), "{output}"),
            "grpc.health.v1.Health/Check" => assert!(output.contains("SERVING"), "{output}"),
            "votemesh.v1.ResultService/GetResults" | "votemesh.v1.ResultService/WatchResults" => {
                assert!(output.contains("\"Cats\""), "{output}")
            }
            _ => {}
        }
    }
    assert!(cast, "the README casts a vote");
    // The README's vote is counted.
    probe::wait_for("the README's vote counted", WAIT, || async {
        let example = Example {
            data: None,
            port: port(DEFAULT_RESULT_LISTEN),
            method: "votemesh.v1.ResultService/GetResults".into(),
        };
        tokio::task::block_in_place(|| run(&example)).contains("\"total\": \"1\"")
    })
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_the_readme_works() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = curl_lines(&readme);
    assert!(
        lines.len() >= 3,
        "the README shows its curl examples: {lines:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_and_dogs()).await;
    let gateway = system.addrs.gateway.to_string();
    let documented = format!("localhost:{}", port(DEFAULT_GATEWAY_LISTEN));
    for line in lines {
        let command = format!("{} --max-time 3", line.replace(&documented, &gateway));
        let output = tokio::task::block_in_place(|| {
            Command::new("sh").args(["-c", &command]).output().unwrap()
        });
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if line.contains("/stream") {
            // A stream never ends by itself: curl stops it at --max-time.
            assert!(text.contains("event: tally"), "{line}: {text}");
        } else {
            assert!(output.status.success(), "{line}: {output:?}");
            assert!(
                text.starts_with('{') && !text.contains("\"error\""),
                "{line}: {text}"
            );
        }
    }
    system.stop().await;
}
