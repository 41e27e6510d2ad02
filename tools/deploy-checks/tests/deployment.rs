//! The deployment files, checked offline by real validators (see
//! `tools/deploy-checks/`): the kustomize output against the Kubernetes
//! OpenAPI schemas and against the promises below, the Dockerfiles with
//! hadolint, the Tiltfile run by a Starlark interpreter with stubbed Tilt
//! builtins, and the compose file against the Dockerfile.
//!
//! What each binary reads and listens on comes from its own clap
//! definition, so the manifests cannot drift from the code.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::CommandFactory;
use serde_json::json;
use votemesh::{config, telemetry};

fn repo() -> PathBuf {
    // The crate lives in tools/deploy-checks/.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in the repository")
        .to_path_buf()
}

/// A validator installed in `target/deploy-tools` (by `.ci/run`).
fn tool(name: &str) -> Command {
    let path = repo().join("target/deploy-tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing; install the validators with:\n  python3 -m venv target/deploy-tools && \
         target/deploy-tools/bin/pip install -r tools/deploy-checks/requirements.txt",
        path.display()
    );
    let mut command = Command::new(path);
    command.current_dir(repo());
    command
}

fn script(name: &str) -> Command {
    let mut command = tool("python");
    command.arg(repo().join("tools/deploy-checks").join(name));
    command
}

fn assert_success(what: &str, output: &Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    println!("{what}:\n{text}");
}

fn assert_failure(what: &str, output: &Output, expected: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{what} should have failed:\n{text}"
    );
    assert!(
        text.contains(expected),
        "{what}: {text:?} should say {expected:?}"
    );
}

/// `kubectl kustomize k8s/`, written to a file.
fn rendered(dir: &Path) -> PathBuf {
    let output = tool("kubectl").args(["kustomize", "k8s"]).output().unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize k8s failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

/// What each component's binary reads and listens on, from its clap definition.
fn components(dir: &Path) -> PathBuf {
    let describe = |command: clap::Command, protocol: &str| {
        let mut env = config::env_names(&command);
        env.push(telemetry::LOG_FILTER_ENV.to_owned());
        let listen = command
            .get_arguments()
            .find(|argument| argument.get_id() == "listen")
            .and_then(|argument| argument.get_default_values().first())
            .and_then(|value| value.to_str())
            .and_then(|value| value.parse::<SocketAddr>().ok())
            .expect("every component has a --listen default");
        json!({ "env": env, "port": listen.port(), "protocol": protocol })
    };
    let spec = json!({
        "vote": describe(votemesh_vote::cli::Cli::command(), "grpc"),
        "worker": describe(votemesh_worker::cli::Cli::command(), "grpc"),
        "result": describe(votemesh_result::cli::Cli::command(), "grpc"),
        "gateway": describe(votemesh_gateway::cli::Cli::command(), "http"),
    });
    let path = dir.join("components.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

#[test]
fn the_kustomize_output_validates_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = rendered(dir.path());
    let output = tool("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&rendered)
        .output()
        .unwrap();
    assert_success("kubernetes-validate --strict", &output);

    // The validator does reject a broken probe.
    let text = std::fs::read_to_string(&rendered).unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, text.replacen("grpc:\n", "grpcc:\n", 1)).unwrap();
    let output = tool("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a misspelt probe must not validate"
    );
}

#[test]
fn the_manifests_keep_their_promises() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = rendered(dir.path());
    let components = components(dir.path());
    let output = script("check_manifests.py")
        .arg(&rendered)
        .arg(&components)
        .output()
        .unwrap();
    assert_success("check_manifests.py", &output);

    // Each kind of broken promise is caught.
    let text = std::fs::read_to_string(&rendered).unwrap();
    let cases = [
        (
            "service: liveness",
            "service: ready",
            "liveness is not grpc",
        ),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "readOnlyRootFilesystem is not true",
        ),
        ("name: REDIS_PORT", "name: REDIS_PROT", "does not read"),
        ("example-password-change-me", "Cats", "holds a Secret value"),
        (
            "containerPort: 5000",
            "containerPort: 5050",
            "the binary listens on 5000",
        ),
    ];
    for (from, to, expected) in cases {
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let output = script("check_manifests.py")
            .arg(&broken)
            .arg(&components)
            .output()
            .unwrap();
        assert_failure(&format!("manifests with {to:?}"), &output, expected);
    }
}

#[test]
fn the_dockerfiles_pass_hadolint() {
    for dockerfile in ["Dockerfile", "tilt/Dockerfile.dev"] {
        let output = tool("hadolint").arg(dockerfile).output().unwrap();
        assert_success(&format!("hadolint {dockerfile}"), &output);
    }
}

#[test]
fn the_tiltfile_runs_with_tilt_builtins_in_both_modes() {
    for args in [&[][..], &["--docker-build"][..]] {
        let output = script("run_tiltfile.py")
            .arg(repo())
            .arg(repo().join("Tiltfile"))
            .args(args)
            .output()
            .unwrap();
        assert_success(&format!("Tiltfile {args:?}"), &output);
        let summary = String::from_utf8_lossy(&output.stdout);
        for forward in [
            "'gateway': ['3000']",
            "'vote': ['5000']",
            "'result': ['5001']",
        ] {
            assert!(summary.contains(forward), "{summary} forwards {forward}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo().join("Tiltfile")).unwrap();
    let cases = [
        (
            original.replace(
                "k8s_yaml(kustomize('k8s'))",
                "k8s_yaml(kustomize('no-such-dir'))",
            ),
            "no-such-dir does not exist",
        ),
        (
            format!("{original}\nk8s_deploy_everything()\n"),
            "k8s_deploy_everything",
        ),
        (format!("{original}\nif True\n"), "Parse error"),
    ];
    for (tiltfile, expected) in cases {
        let path = dir.path().join("Tiltfile");
        std::fs::write(&path, tiltfile).unwrap();
        let output = script("run_tiltfile.py")
            .arg(repo())
            .arg(&path)
            .arg("--docker-build")
            .output()
            .unwrap();
        assert_failure("a broken Tiltfile", &output, expected);
    }
}

#[test]
fn the_compose_file_uses_the_dockerfile_targets_and_the_binaries_health_checks() {
    let output = script("check_compose.py").arg(repo()).output().unwrap();
    assert_success("check_compose.py", &output);
}
