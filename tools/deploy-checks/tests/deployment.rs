//! The deployment files, checked offline by real validators (see
//! `tools/deploy-checks/`): every kustomization (the base, `overlays/dev`,
//! `overlays/prod`) against the Kubernetes OpenAPI schemas and against the
//! promises of `check_manifests.py`, the Dockerfiles with hadolint, the
//! Tiltfile run by a Starlark interpreter with stubs of Tilt's builtins, the
//! images' build context, the binaries the Tilt dev build makes, the compose
//! file, the host ports everywhere a developer meets them, and the CI
//! workflow with actionlint.
//!
//! What each binary reads and listens on comes from its own clap
//! definition, so the manifests cannot drift from the code. Every check is
//! also run on a broken copy of what it checks, and must fail there.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::CommandFactory;
use serde_json::{Value, json};
use votemesh::{client::balance, config, shutdown, telemetry};

/// The kustomizations and the flavour of promises each keeps.
const KUSTOMIZATIONS: [(&str, &str); 3] = [
    ("k8s", "base"),
    ("k8s/overlays/dev", "dev"),
    ("k8s/overlays/prod", "prod"),
];

/// The cargo command of `tilt/Dockerfile.build`, which the Tilt dev loop runs
/// inside Debian 12's Rust image.
const TILT_DEV_BUILD: [&str; 15] = [
    "build",
    "--locked",
    "--config",
    "profile.dev.debug=\"line-tables-only\"",
    "-p",
    "votemesh-vote",
    "-p",
    "votemesh-worker",
    "-p",
    "votemesh-result",
    "-p",
    "votemesh-gateway",
    "-p",
    "votemesh-loadgen",
    "--quiet",
];

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

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(what: &str, output: &Output) {
    let text = text(output);
    assert!(output.status.success(), "{what} failed:\n{text}");
    println!("{what}:\n{text}");
}

fn assert_failure(what: &str, output: &Output, expected: &str) {
    let text = text(output);
    assert!(
        !output.status.success(),
        "{what} should have failed:\n{text}"
    );
    assert!(
        text.contains(expected),
        "{what}: {text:?} should say {expected:?}"
    );
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: impl AsRef<Path>, contents: &str) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents).unwrap();
}

/// `text` with `from` replaced by `to` once; `from` must be there.
fn broken(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the file any more");
    text.replacen(from, to, 1)
}

/// `kubectl kustomize DIR`, written to a file in `dir`.
fn rendered(kustomization: &str, dir: &Path) -> PathBuf {
    let output = tool("kubectl")
        .args(["kustomize", kustomization])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {kustomization} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join(format!("{}.yaml", kustomization.replace('/', "-")));
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

/// A kustomization in `dir` that is the base plus the observability
/// component (the dev overlay has it too; this is it on production
/// counts), as a path `kubectl kustomize` takes from the repository.
fn base_with_observability(dir: &Path) -> String {
    base_with_component("observability", dir)
}

/// A kustomization in `dir` that is the base plus `k8s/components/<component>`
/// and the published images (as `kubectl apply -k k8s/` deploys), as a path
/// `kubectl kustomize` takes from the repository.
fn base_with_component(component: &str, dir: &Path) -> String {
    let kustomization = dir.join(format!("base-with-{component}"));
    // kustomize takes only relative paths to other kustomizations.
    let up = "../".repeat(kustomization.components().count() - 1);
    let k8s = format!("{up}{}", repo().join("k8s").display()).replace("//", "/");
    write(
        kustomization.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{k8s}/base]\n\
             components: [{k8s}/components/{component}, {k8s}/components/published-images]\n\
             labels: [{{pairs: {{app.kubernetes.io/part-of: votemesh}}}}]\n"
        ),
    );
    kustomization.display().to_string()
}

/// The variable that sets the gateway's operator listener (`--admin-listen`).
const GATEWAY_ADMIN_ENV: &str = "GATEWAY_ADMIN_LISTEN_ADDR";
/// The port the manifests give that listener.
const GATEWAY_ADMIN_PORT: u16 = 8081;

/// What each component's binary reads and listens on, from its clap
/// definition, and how often the gateway's client looks its upstreams'
/// names up again.
fn components(dir: &Path) -> PathBuf {
    let describe = |command: clap::Command, protocol: &str| {
        let mut env = config::env_names(&command);
        env.push(telemetry::LOG_FILTER_ENV.to_owned());
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_id() == "listen")
            .expect("every component has --listen");
        let listen = argument
            .get_default_values()
            .first()
            .and_then(|value| value.to_str())
            .and_then(|value| value.parse::<SocketAddr>().ok())
            .expect("every component has a --listen default");
        let listen_env = argument
            .get_env()
            .and_then(|name| name.to_str())
            .expect("--listen reads a variable");
        json!({
            "env": env,
            "port": listen.port(),
            "listen_env": listen_env,
            "protocol": protocol,
        })
    };
    let gateway_command = votemesh_gateway::cli::Cli::command();
    // The gateway's operator port (/metrics, /healthz, /readyz): from its
    // clap definition, or, until the binary has --admin-listen, the port
    // the manifests give it (the env-name check then fails, as it must).
    let admin_port = gateway_command
        .get_arguments()
        .find(|argument| {
            argument.get_env().and_then(|name| name.to_str()) == Some(GATEWAY_ADMIN_ENV)
        })
        .and_then(|argument| argument.get_default_values().first().cloned())
        .and_then(|value| value.to_str().and_then(|v| v.parse::<SocketAddr>().ok()))
        .map_or(GATEWAY_ADMIN_PORT, |address| address.port());
    let mut gateway = describe(gateway_command, "http");
    gateway["resolve_interval"] = json!(balance::RESOLVE_INTERVAL.as_secs());
    gateway["admin_port"] = json!(admin_port);
    gateway["admin_env"] = json!(GATEWAY_ADMIN_ENV);
    let mut bot_env = config::env_names(&votemesh_loadgen::cli::Cli::command());
    bot_env.push(telemetry::LOG_FILTER_ENV.to_owned());
    let spec = json!({
        "vote": describe(votemesh_vote::cli::Cli::command(), "grpc"),
        "worker": describe(votemesh_worker::cli::Cli::command(), "grpc"),
        "result": describe(votemesh_result::cli::Cli::command(), "grpc"),
        "gateway": gateway,
        // The vote bot (k8s/components/vote-bot): a client, no server.
        "vote-bot": {
            "env": bot_env,
            "client": true,
        },
    });
    let path = dir.join("components.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

fn check_manifests(rendered: &Path, components: &Path, flavour: &str) -> Output {
    script("check_manifests.py")
        .arg(rendered)
        .arg(components)
        .arg(flavour)
        .arg(env!("CARGO_PKG_VERSION"))
        .output()
        .unwrap()
}

#[test]
fn every_kustomization_validates_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |path: &Path| {
        tool("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(path)
            .output()
            .unwrap()
    };
    let with_observability = base_with_observability(dir.path());
    for kustomization in KUSTOMIZATIONS
        .map(|(k, _)| k)
        .iter()
        .chain([&with_observability.as_str()])
    {
        let rendered = rendered(kustomization, dir.path());
        assert_success(
            &format!("kubernetes-validate --strict {kustomization}"),
            &validate(&rendered),
        );
    }

    // The validator does reject a misspelt probe and a misspelt spread.
    let prod = read(rendered("k8s/overlays/prod", dir.path()));
    for (from, to) in [("grpc:\n", "grpcc:\n"), ("topologyKey:", "topologyKeys:")] {
        let path = dir.path().join("broken.yaml");
        write(&path, &broken(&prod, from, to));
        assert!(
            !validate(&path).status.success(),
            "{to:?} must not validate"
        );
    }
}

#[test]
fn every_kustomization_keeps_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    let components = components(dir.path());
    // The base and prod without the observability component, dev and the
    // base with it.
    let with_observability = base_with_observability(dir.path());
    let with_operator = base_with_component("prometheus-operator", dir.path());
    for (kustomization, flavour) in KUSTOMIZATIONS
        .into_iter()
        .chain([(with_observability.as_str(), "base")])
        .chain([(with_operator.as_str(), "base")])
    {
        let rendered = rendered(kustomization, dir.path());
        assert_success(
            &format!("check_manifests.py {flavour} ({kustomization})"),
            &check_manifests(&rendered, &components, flavour),
        );
    }

    // Each kind of broken promise is caught, in the flavour that makes it.
    let base = read(rendered("k8s", dir.path()));
    let dev = read(rendered("k8s/overlays/dev", dir.path()));
    let prod = read(rendered("k8s/overlays/prod", dir.path()));
    let hashed = |text: &str, name: &str| {
        let at = text
            .find(&format!("name: {name}-"))
            .expect("a generated name");
        text[at + 6..at + 6 + name.len() + 11].to_owned()
    };
    let config = hashed(&base, "app-config");
    let operator = read(rendered(&with_operator, dir.path()));
    let cases = [
        (
            "base",
            broken(&base, "service: liveness", "service: ready"),
            "liveness is not grpc",
        ),
        (
            "base",
            broken(
                &base,
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
            ),
            "readOnlyRootFilesystem is not true",
        ),
        (
            "base",
            broken(&base, "name: REDIS_PORT", "name: REDIS_PROT"),
            "does not read",
        ),
        (
            "base",
            broken(
                &base,
                "OPTION_A: Cats",
                "OPTION_A: example-password-change-me",
            ),
            "holds a Secret value",
        ),
        (
            "base",
            broken(&base, "containerPort: 5000", "containerPort: 5050"),
            "the binary listens on [5000]",
        ),
        (
            "base",
            broken(&base, "value: '[::]:5000'", "value: 127.0.0.1:5000"),
            "VOTE_LISTEN_ADDR is '127.0.0.1:5000', not every interface",
        ),
        (
            "base",
            broken(
                &base,
                "- name: POSTGRES_DB\n          valueFrom:\n            configMapKeyRef:\n              key: DB_NAME\n              name: db-config-",
                "- name: POSTGRES_DB\n          valueFrom:\n            configMapKeyRef:\n              key: DB_NAME\n              name: app-config-",
            ),
            "statefulset/postgres: POSTGRES_DB comes from app-config-",
        ),
        (
            "base",
            broken(&base, "appProtocol: kubernetes.io/h2c", "appProtocol: http"),
            "not kubernetes.io/h2c",
        ),
        (
            "base",
            base.replace(&config, "app-config"),
            "not generated with a content hash",
        ),
        (
            "base",
            broken(
                &base,
                &format!("votemesh-vote:{}", env!("CARGO_PKG_VERSION")),
                "votemesh-vote:latest",
            ),
            "is not ghcr.io/votemesh/",
        ),
        (
            "base",
            broken(
                &base,
                "unhealthyPodEvictionPolicy: AlwaysAllow",
                "unhealthyPodEvictionPolicy: IfHealthyBudget",
            ),
            "not AlwaysAllow",
        ),
        (
            "base",
            broken(&base, "timeoutSeconds: 3", "timeoutSeconds: 1"),
            "a CPU-throttled pod fails it",
        ),
        (
            "base",
            broken(&base, "timeoutSeconds: 5", "timeoutSeconds: 12"),
            "is longer than its periodSeconds",
        ),
        (
            "base",
            broken(
                &base,
                "whenUnsatisfiable: ScheduleAnyway",
                "whenUnsatisfiable: DoNotSchedule",
            ),
            "not ScheduleAnyway (a one-node cluster could not schedule)",
        ),
        (
            "base",
            broken(&base, "- pod-template-hash", "- app.kubernetes.io/name"),
            "exists in both matchLabelKeys and labelSelector",
        ),
        (
            "base",
            broken(&base, "- 180mb", "- 200mb"),
            "leaves no room for buffers",
        ),
        (
            "base",
            broken(&base, "- noeviction", "- allkeys-lru"),
            "not noeviction",
        ),
        (
            "base",
            broken(
                &base,
                "VOTE_ADDR: http://vote-pods:5000",
                "VOTE_ADDR: http://vote:5000",
            ),
            "names service/vote, which is not headless",
        ),
        (
            "base",
            broken(
                &base,
                "RESULT_ADDR: http://result-pods:5001",
                "RESULT_ADDR: http://result-pods:5002",
            ),
            "a headless name does not translate ports",
        ),
        (
            "base",
            broken(
                &base,
                "name: result-pods\n  namespace: votemesh\nspec:\n  clusterIP: None\n",
                "name: result-pods\n  namespace: votemesh\nspec:\n",
            ),
            "which is not headless",
        ),
        (
            "base",
            broken(&base, "seconds: 10", "seconds: 5"),
            "the gateway may still choose a leaving pod",
        ),
        (
            "base",
            broken(
                &base,
                "- port: 5001\n      protocol: TCP",
                "- port: 5002\n      protocol: TCP",
            ),
            "result is reachable on port 5001 from []",
        ),
        (
            "dev",
            broken(&dev, "replicas: 1\n", "replicas: 3\n"),
            "expected 1 on a laptop",
        ),
        // The base's autoscalers and disruption budgets in dev.
        ("dev", base.clone(), "would scale past one replica"),
        ("dev", base.clone(), "block every kubectl drain"),
        // The vote bot (k8s/components/vote-bot, in dev).
        (
            "dev",
            broken(
                &dev,
                "value: http://gateway:3000",
                "value: http://vote:5000",
            ),
            "vote-bot: GATEWAY_URL 'http://vote:5000' is not the gateway Service",
        ),
        (
            "dev",
            broken(&dev, "name: LOADGEN_VOTERS", "name: LOADGEN_VOTRES"),
            "vote-bot: sets LOADGEN_VOTRES, which votemesh-loadgen does not read",
        ),
        (
            "dev",
            broken(
                &dev,
                "    - port: 3000
      protocol: TCP
    to:",
                "    - port: 5432
      protocol: TCP
    to:",
            ),
            "beyond the gateway's port 3000 and DNS",
        ),
        (
            "dev",
            broken(
                &dev,
                "readOnlyRootFilesystem: false",
                "readOnlyRootFilesystem: true",
            ),
            "Tilt's live update writes the binary",
        ),
        (
            "prod",
            broken(
                &prod,
                "pod-security.kubernetes.io/enforce: restricted",
                "pod-security.kubernetes.io/enforce: baseline",
            ),
            "restricted Pod Security Standard",
        ),
        (
            "prod",
            broken(
                &prod,
                "topologyKey: kubernetes.io/hostname",
                "topologyKey: kubernetes.io/arch",
            ),
            "not spread over kubernetes.io/hostname",
        ),
        (
            "prod",
            broken(
                &prod,
                "topologyKey: topology.kubernetes.io/zone",
                "topologyKey: kubernetes.io/hostname",
            ),
            "more than one spread over kubernetes.io/hostname",
        ),
        // The public edge (more in the_public_edge_reaches_public_paths_only).
        (
            "prod",
            broken(
                &prod,
                "type: PathPrefix\n        value: /api",
                "type: PathPrefix\n        value: /",
            ),
            "httproute/gateway: PathPrefix / makes the operators' /metrics public",
        ),
        (
            "prod",
            broken(&prod, "request: 0s", "request: 30s"),
            "request timeout 30s cuts the live results stream",
        ),
        (
            "prod",
            broken(&prod, "    timeouts:\n      request: 0s\n", ""),
            "leaves the request timeout to the implementation",
        ),
        (
            "prod",
            broken(&prod, "sectionName: https", "section: https"),
            "has unknown fields or no name",
        ),
        (
            "prod",
            broken(
                &prod,
                "name: TRUSTED_PROXIES\n          value: \"\"",
                "name: TRUSTED_PROXIES\n          value: 10.0.0.0/8,192.0.2.7",
            ),
            "TRUSTED_PROXIES trusts all of 10.0.0.0/8",
        ),
        // The gateway's operator port (8081, GATEWAY_ADMIN_LISTEN_ADDR).
        (
            "base",
            broken(
                &base,
                "path: /readyz\n            port: admin",
                "path: /readyz\n            port: http",
            ),
            "readinessProbe asks port http, not the operators' port 8081",
        ),
        (
            "base",
            broken(
                &base,
                "name: gateway-from-anywhere\n  namespace: votemesh\nspec:\n  ingress:\n  - ports:\n    - port: 3000",
                "name: gateway-from-anywhere\n  namespace: votemesh\nspec:\n  ingress:\n  - ports:\n    - port: 8081",
            ),
            "gateway is reachable on its admin port 8081 from ['*']",
        ),
        (
            "prod",
            broken(
                &prod,
                "    name: http\n    port: 3000\n    targetPort: http\n  selector:\n    app.kubernetes.io/name: gateway\n  type: ClusterIP",
                "    name: http\n    port: 3000\n    targetPort: admin\n  selector:\n    app.kubernetes.io/name: gateway\n  type: ClusterIP",
            ),
            "reaches the gateway's admin port: a public route could reach /metrics",
        ),
        // Metrics and the observability component.
        (
            "base",
            broken(
                &base,
                "appProtocol: kubernetes.io/h2c\n    name: metrics\n    port: 5000",
                "appProtocol: http\n    name: metrics\n    port: 5000",
            ),
            "deployment/vote port 5000: Services disagree on its appProtocol",
        ),
        (
            "base",
            broken(
                &operator,
                "release: kube-prometheus-stack",
                "release: prometheus",
            ),
            "kube-prometheus-stack's Prometheus would not select it",
        ),
        (
            "base",
            broken(
                &operator,
                "jobLabel: app.kubernetes.io/name",
                "jobLabel: app",
            ),
            "the dashboard selects job by component name",
        ),
        (
            "base",
            broken(
                &operator,
                "kubernetes.io/metadata.name: monitoring\n      podSelector:\n        matchLabels:\n          app.kubernetes.io/name: prometheus\n    ports:\n    - port: 5000",
                "kubernetes.io/metadata.name: monitoring\n      podSelector:\n        matchLabels:\n          app.kubernetes.io/name: prometheus\n    ports:\n    - port: 5050",
            ),
            "vote: no NetworkPolicy lets an operator's Prometheus (another namespace) reach its metrics port 5000",
        ),
        (
            "base",
            broken(
                &base,
                "prometheus.io/port: \"5000\"",
                "prometheus.io/port: \"5050\"",
            ),
            "pod annotation prometheus.io/port",
        ),
        (
            "base",
            broken(
                &base,
                "publishNotReadyAddresses: true",
                "publishNotReadyAddresses: false",
            ),
            "leaves out pods that are not ready",
        ),
        (
            "base",
            broken(&base, "name: metrics", "name: scrape"),
            "no port named metrics",
        ),
        (
            "dev",
            broken(
                &dev,
                "OTEL_EXPORTER_OTLP_ENDPOINT: http://otel-collector:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT: \"\"",
            ),
            "not the collector's http://otel-collector:4317",
        ),
        (
            "dev",
            broken(
                &dev,
                "image: prom/prometheus:v3.5.0",
                "image: prom/prometheus",
            ),
            "not pinned to a version",
        ),
        (
            "dev",
            broken(
                &dev,
                "app.kubernetes.io/name: vote\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: worker\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: result\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: gateway\n    ports:\n    - port: 4317",
                "app.kubernetes.io/name: jaeger\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: worker\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: result\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: gateway\n    ports:\n    - port: 4317",
            ),
            "not from every component",
        ),
        (
            "dev",
            broken(
                &dev,
                "          app.kubernetes.io/name: prometheus\n    ports:\n    - port: 5000",
                "          app.kubernetes.io/name: grafana\n    ports:\n    - port: 5000",
            ),
            "vote is reachable on port 5000 from ['gateway', 'grafana'], expected only ['gateway', 'prometheus']",
        ),
        (
            "dev",
            broken(&dev, "_metrics._tcp.worker-metrics", "_metrics._tcp.worker"),
            "not the SRV records of service/worker-metrics",
        ),
        (
            "dev",
            broken(&dev, "Votes accepted /s", "Votes /s"),
            "does not hold the votemesh dashboard",
        ),
        // The base in prod: an example Secret, no Ingress.
        ("prod", base.clone(), "must not come from the repository"),
        (
            "prod",
            base.clone(),
            "no HTTPRoute or Ingress routes to service/gateway",
        ),
        ("prod", base.clone(), "vote: no egress NetworkPolicy"),
        ("prod", dev.clone(), "whose Grafana is dev only"),
        (
            "dev",
            broken(
                &dev,
                "    app.kubernetes.io/part-of: votemesh\n  name: vote-bot",
                "  name: vote-bot",
            ),
            "ServiceAccount/vote-bot: no label app.kubernetes.io/part-of=votemesh",
        ),
        // Egress (k8s/components/egress).
        (
            "prod",
            broken(
                &prod,
                "name: vote-egress\n  namespace: votemesh\nspec:\n  egress:\n  - ports:\n    - port: 6379",
                "name: vote-egress\n  namespace: votemesh\nspec:\n  egress:\n  - ports:\n    - port: 5432",
            ),
            "vote: NetworkPolicy vote-egress lets it reach redis on 5432, which it does not call",
        ),
        (
            "prod",
            broken(
                &prod,
                "  egress:\n  - ports:\n    - port: 53\n      protocol: UDP\n    - port: 53\n      protocol: TCP",
                "  egress:\n  - ports:\n    - port: 53\n      protocol: UDP\n    - port: 443\n      protocol: TCP",
            ),
            "NetworkPolicy components-to-dns-and-collector lets it reach",
        ),
        (
            "prod",
            broken(
                &prod,
                "    - port: 5432\n      protocol: TCP\n    to:\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: postgres\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: worker",
                "    - port: 6379\n      protocol: TCP\n    to:\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: redis\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: worker",
            ),
            "worker: its egress policies do not let it reach postgres on 5432",
        ),
    ];
    for (flavour, manifests, expected) in cases {
        let path = dir.path().join("broken.yaml");
        write(&path, &manifests);
        assert_failure(
            &format!("{flavour} manifests broken to show {expected:?}"),
            &check_manifests(&path, &components, flavour),
            expected,
        );
    }
}

#[test]
fn the_dockerfiles_pass_hadolint() {
    let dockerfiles = ["Dockerfile", "tilt/Dockerfile.dev", "tilt/Dockerfile.build"];
    for dockerfile in dockerfiles {
        let output = tool("hadolint").arg(dockerfile).output().unwrap();
        assert_success(&format!("hadolint {dockerfile}"), &output);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Dockerfile");
    let original = read(repo().join("tilt/Dockerfile.build"));
    write(
        &path,
        &broken(
            &original,
            "WORKDIR /src",
            "WORKDIR /src\nRUN apt-get update && apt-get install -y protobuf-compiler",
        ),
    );
    let output = tool("hadolint").arg(&path).output().unwrap();
    assert_failure("hadolint on an unpinned apt-get", &output, "DL3008");
}

/// Runs the Tiltfile at `tiltfile` with Tilt arguments `args`; returns the
/// run and the summary it wrote.
fn run_tiltfile(tiltfile: &Path, args: &[&str], dir: &Path) -> (Output, Value) {
    let summary = dir.join("tilt-summary.json");
    let _ = std::fs::remove_file(&summary);
    let output = script("run_tiltfile.py")
        .arg(repo())
        .arg(tiltfile)
        .arg(&summary)
        .args(args)
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (output, summary)
}

/// The promises of the Tiltfile's summary that the harness does not check
/// itself; empty when all hold.
fn tilt_promises(summary: &Value, docker_build: bool) -> Vec<String> {
    let mut broken = Vec::new();
    if summary["kustomize"] != json!(["k8s/overlays/dev"]) {
        broken.push(format!(
            "deploys {} instead of k8s/overlays/dev",
            summary["kustomize"]
        ));
    }
    let forwards = json!({
        "gateway": ["3000:3000"],
        "vote": ["15000:5000"],
        "result": ["15001:5001"],
        "worker": ["18080:8080"],
        // The observability component's UIs (k8s/components/observability).
        "grafana": ["13000:3000"],
        "jaeger": ["16686:16686"],
        "prometheus": ["19090:9090"],
    });
    if summary["port_forwards"] != forwards {
        broken.push(format!("port forwards {}", summary["port_forwards"]));
    }
    let links = summary["links"]["gateway"].to_string();
    for url in [
        "http://localhost:3000",
        "http://localhost:3000/results",
        "http://localhost:10350",
        "http://localhost:13000/d/votemesh/votemesh",
        "http://localhost:16686/search?service=votemesh-gateway",
    ] {
        if !links.contains(&format!("\"{url}\"")) {
            broken.push(format!("no link to {url} on the gateway"));
        }
    }
    for (name, port) in [("grafana", 13000), ("jaeger", 16686), ("prometheus", 19090)] {
        let own = summary["links"][name].to_string();
        if !own.contains(&format!("\"http://localhost:{port}/")) {
            broken.push(format!("no link to localhost:{port} on {name}"));
        }
        if summary["labels"][name] != json!(["observability"]) {
            broken.push(format!(
                "{name}: labels {}, not observability",
                summary["labels"][name]
            ));
        }
    }
    let test = &summary["local_resources"]["cargo-test"];
    if test["cmd"] != "cargo test --workspace"
        || test["manual"] != true
        || test["auto_init"] != false
    {
        broken.push(format!("no manual `cargo test` resource: {test}"));
    }
    // The vote bot (k8s/components/vote-bot, in the dev overlay).
    if summary["labels"]["vote-bot"] != json!(["load"]) {
        broken.push(format!(
            "vote-bot: labels {}, not load",
            summary["labels"]["vote-bot"]
        ));
    }
    // The four components' and the load generator's.
    let images = summary["images"].as_object().cloned().unwrap_or_default();
    if images.len() != 5 {
        broken.push(format!("{} images, expected 5", images.len()));
    }
    for (name, image) in &images {
        if docker_build {
            if image["only"].as_array().is_none_or(|only| only.is_empty()) {
                broken.push(format!("{name}: the whole repository is its build context"));
            }
        } else if image["live_update"]
            .as_array()
            .is_none_or(|steps| steps.is_empty())
        {
            broken.push(format!("{name}: no live update"));
        }
    }
    broken
}

#[test]
fn the_tiltfile_runs_with_tilt_builtins_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let tiltfile = repo().join("Tiltfile");
    for args in [&[][..], &["--docker-build"][..]] {
        let (output, summary) = run_tiltfile(&tiltfile, args, dir.path());
        assert_success(&format!("Tiltfile {args:?}"), &output);
        let broken = tilt_promises(&summary, !args.is_empty());
        assert!(broken.is_empty(), "Tiltfile {args:?}: {broken:?}");
    }

    // `tilt up -- --scale-out`: the scaled-out overlay, the CloudNativePG
    // operator of the docs installed by a local resource, the Clusters in
    // the resource "postgres", the Redis Cluster and its Job as data.
    for args in [&["--scale-out"][..], &["--scale-out", "--docker-build"][..]] {
        let (output, summary) = run_tiltfile(&tiltfile, args, dir.path());
        assert_success(&format!("Tiltfile {args:?}"), &output);
        assert_eq!(summary["kustomize"], json!(["k8s/overlays/scale-out"]));
        let operator = summary["local_resources"]["cnpg-operator"]["cmd"].to_string();
        assert!(
            operator.contains("kubectl apply --server-side -f https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml"),
            "Tiltfile {args:?}: the operator is not installed as the docs do: {operator}"
        );
        assert_eq!(
            summary["resources"]["postgres"],
            json!(["Cluster/votes-0", "Cluster/votes-1"]),
            "Tiltfile {args:?}"
        );
        for name in ["redis-cluster", "redis-cluster-create", "postgres"] {
            assert_eq!(
                summary["labels"][name],
                json!(["data"]),
                "Tiltfile {args:?}: {name}"
            );
        }
    }
    // ...and the Clusters left out of "postgres" (in "config") fail the
    // harness: the components would wait for a resource Tilt never makes.
    let path = dir.path().join("Tiltfile");
    write(
        &path,
        &broken(&read(&tiltfile), " or app == DATABASE_OBJECTS:", ":"),
    );
    let (output, _) = run_tiltfile(&path, &["--scale-out"], dir.path());
    assert_failure(
        "Tiltfile --scale-out with the Clusters not in postgres",
        &output,
        "worker: depends on unknown resource postgres",
    );

    // The harness catches each kind of mistake Tilt would reject or that
    // would leave objects uncategorized...
    let original = read(&tiltfile);
    let cases = [
        (
            broken(
                &original,
                "OVERLAY = 'k8s/overlays/dev'",
                "OVERLAY = 'k8s/overlays/none'",
            ),
            "k8s/overlays/none does not exist",
        ),
        (
            format!("{original}\nk8s_deploy_everything()\n"),
            "k8s_deploy_everything",
        ),
        (format!("{original}\nif True\n"), "Parse error"),
        (
            broken(
                &original,
                "        port_forwards=[port],",
                "        port_forward=[port],",
            ),
            "port_forward",
        ),
        (
            broken(
                &original,
                "k8s_resource(new_name='network-policies', objects=policies,",
                "k8s_resource(new_name='network-policies', objects=policies[1:],",
            ),
            "uncategorized: NetworkPolicy",
        ),
        (
            broken(&original, "labels=['tests'],", ""),
            "resource cargo-test: no label",
        ),
        (
            broken(
                &original,
                "deps=SOURCES + ['tilt/Dockerfile.build'],",
                "deps=SOURCES + ['tilt/Dockerfile.built'],",
            ),
            "tilt/Dockerfile.built does not exist",
        ),
        (
            broken(&original, "labels=['observability'],", ""),
            "resource grafana: no label",
        ),
        (
            broken(&original, "labels=['load'],", ""),
            "resource vote-bot: no label",
        ),
        (
            broken(
                &original,
                "objects=owned.get(name, []),\n        resource_deps=['config'],\n        labels=['observability'],",
                "objects=[],\n        resource_deps=['config'],\n        labels=['observability'],",
            ),
            "uncategorized: ServiceAccount grafana",
        ),
    ];
    for (tiltfile, expected) in cases {
        let path = dir.path().join("Tiltfile");
        write(&path, &tiltfile);
        let (output, _) = run_tiltfile(&path, &[], dir.path());
        assert_failure("a broken Tiltfile", &output, expected);
    }

    // ...and the summary's promises catch the rest: the base instead of the
    // dev overlay, a port forward on macOS's AirPlay port, no `only=`.
    let cases = [
        (
            broken(&original, "OVERLAY = 'k8s/overlays/dev'", "OVERLAY = 'k8s'"),
            "instead of k8s/overlays/dev",
        ),
        (broken(&original, "'15000:5000'", "'5000'"), "port forwards"),
        (
            broken(&original, "target=name, only=SOURCES)", "target=name)"),
            "the whole repository is its build context",
        ),
        (
            broken(&original, "'13000:3000'", "'3000:3000'"),
            "port forwards",
        ),
        (
            broken(&original, "'/d/votemesh/votemesh'", "'/'"),
            "no link to http://localhost:13000/d/votemesh/votemesh on the gateway",
        ),
    ];
    for (tiltfile, expected) in cases {
        let path = dir.path().join("Tiltfile");
        write(&path, &tiltfile);
        let (_, summary) = run_tiltfile(&path, &["--docker-build"], dir.path());
        let broken = tilt_promises(&summary, true);
        assert!(
            broken.iter().any(|b| b.contains(expected)),
            "{broken:?} should say {expected:?}"
        );
    }
}

#[test]
fn the_images_build_context_holds_the_sources_and_nothing_else() {
    let dockerignore = repo().join(".dockerignore");
    let context = |dockerignore: &Path, only: &[String]| {
        script("check_context.py")
            .arg(repo())
            .arg(dockerignore)
            .args(only)
            .output()
            .unwrap()
    };
    assert_success(".dockerignore", &context(&dockerignore, &[]));
    // Tilt's --docker-build narrows it further with only=.
    let dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_tiltfile(&repo().join("Tiltfile"), &["--docker-build"], dir.path());
    assert_success("Tiltfile --docker-build", &output);
    for (name, image) in summary["images"].as_object().expect("images") {
        let only: Vec<String> = image["only"]
            .as_array()
            .expect("only=")
            .iter()
            .map(|item| item.as_str().expect("a path").to_owned())
            .collect();
        assert_success(
            &format!("{name} only={only:?}"),
            &context(&dockerignore, &only),
        );
    }

    let original = read(&dockerignore);
    let cases = [
        // The old .dockerignore: README, k8s/, tilt/ and the rest went in.
        (
            "target/\n.git/\n".to_owned(),
            "rebuilds the images: README.md",
        ),
        (
            broken(&original, "!tools/deploy-checks/Cargo.toml\n", ""),
            "cargo cannot load the workspace",
        ),
        (
            broken(&original, "!proto/\n", ""),
            "missing from the build context: proto/",
        ),
        (
            broken(&original, "gateway/tests/\n", ""),
            "rebuilds the images: gateway/tests/",
        ),
    ];
    for (contents, expected) in cases {
        let path = dir.path().join("dockerignore");
        write(&path, &contents);
        assert_failure(
            &format!("a .dockerignore broken to show {expected:?}"),
            &context(&path, &[]),
            expected,
        );
    }
}

#[test]
fn the_tilt_dev_build_runs_in_the_image_it_is_synced_into() {
    // The same cargo command as tilt/Dockerfile.build's (on this Debian 12
    // machine, the release of its Rust image)...
    let dockerfile = read(repo().join("tilt/Dockerfile.build"));
    let in_dockerfile = format!(
        "cargo {}",
        TILT_DEV_BUILD[..TILT_DEV_BUILD.len() - 1]
            .iter()
            .map(|arg| if arg.contains('"') {
                format!("'{arg}'")
            } else {
                (*arg).to_owned()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        dockerfile.contains(&in_dockerfile),
        "tilt/Dockerfile.build no longer runs `{in_dockerfile}`: keep this test's command equal to it"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(TILT_DEV_BUILD)
        .current_dir(repo())
        .output()
        .unwrap();
    assert_success("the Tilt dev build, here", &output);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let binaries: Vec<PathBuf> = ["vote", "worker", "result", "gateway", "loadgen"]
        .iter()
        .map(|c| target.join("debug").join(format!("votemesh-{c}")))
        .collect();

    // ...makes binaries that need only what distroless cc-debian12 has.
    let check = |root: &Path, binaries: &[PathBuf]| {
        script("check_elf.py")
            .arg(root)
            .args(binaries)
            .output()
            .unwrap()
    };
    assert_success("check_elf.py", &check(&repo(), &binaries));

    // A runtime image on another Debian release, or a binary that needs a
    // library the image lacks, is caught.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("tilt/Dockerfile.build"), &dockerfile);
    write(
        dir.path().join("tilt/Dockerfile.dev"),
        &broken(
            &read(repo().join("tilt/Dockerfile.dev")),
            "cc-debian12",
            "cc-debian11",
        ),
    );
    assert_failure(
        "a dev image on Debian 11",
        &check(dir.path(), &binaries[..1]),
        "runs on gcr.io/distroless/cc-debian11",
    );
    let readelf = Command::new("sh")
        .args(["-c", "command -v readelf"])
        .output()
        .unwrap();
    let readelf = PathBuf::from(String::from_utf8_lossy(&readelf.stdout).trim());
    assert_failure(
        "a binary that needs libz",
        &check(&repo(), &[readelf]),
        "needs libz.so.1, which distroless cc does not have",
    );
}

fn check_compose(root: &Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    script("check_compose.py")
        .arg(root)
        .arg(shutdown::DRAIN_TIMEOUT.as_secs_f64().to_string())
        .arg(components(dir.path()))
        .output()
        .unwrap()
}

#[test]
fn the_compose_file_keeps_its_promises() {
    assert_success("check_compose.py", &check_compose(&repo()));

    let original = read(repo().join("docker-compose.yml"));
    let cases = [
        (
            broken(&original, "\"127.0.0.1:15000:5000\"", "\"5000:5000\""),
            "host port 5000 is taken on macOS",
        ),
        (
            broken(
                &original,
                "stop_grace_period: 20s",
                "stop_grace_period: 15s",
            ),
            "is not longer than the 15 s drain",
        ),
        (
            broken(
                &original,
                "    networks: [front]\n",
                "    networks: [front, back]\n",
            ),
            "gateway: on networks ['back', 'front']",
        ),
        (
            broken(&original, "target: worker", "target: wroker"),
            "builds target 'wroker'",
        ),
        // The vote bot serves nothing: only in its profile, no health check.
        (
            broken(&original, "    profiles: [bot]\n", ""),
            "vote-bot: profiles None, expected only ['bot']",
        ),
        (
            broken(
                &original,
                "    healthcheck:\n      disable: true\n\n  # --profile observability",
                "    healthcheck:\n      test: [\"CMD\", \"true\"]\n\n  # --profile observability",
            ),
            "vote-bot: serves nothing, so its healthcheck must be disabled",
        ),
        // The observability profile.
        (
            broken(&original, "  profiles: [observability]\n", ""),
            "grafana: profiles None, expected only ['observability']",
        ),
        (
            broken(
                &original,
                "image: grafana/grafana:12.1.1",
                "image: grafana/grafana",
            ),
            "grafana: image 'grafana/grafana' is not pinned",
        ),
        (
            broken(
                &original,
                "      result: {condition: service_healthy}\n    healthcheck:\n      test: [\"CMD\", \"/usr/local/bin/votemesh-gateway\"",
                "      result: {condition: service_healthy}\n      otel-collector: {condition: service_healthy}\n    healthcheck:\n      test: [\"CMD\", \"/usr/local/bin/votemesh-gateway\"",
            ),
            "gateway: depends on otel-collector, which only the observability profile starts",
        ),
        (
            broken(
                &original,
                "OTEL_EXPORTER_OTLP_ENDPOINT: ${VOTEMESH_OTLP_ENDPOINT:-}",
                "OTEL_EXPORTER_OTLP_ENDPOINT: ${OTEL_EXPORTER_OTLP_ENDPOINT:-}",
            ),
            "vote: OTEL_EXPORTER_OTLP_ENDPOINT is not taken from VOTEMESH_OTLP_ENDPOINT",
        ),
        (
            broken(
                &original,
                "GATEWAY_ADMIN_LISTEN_ADDR: 0.0.0.0:8081",
                "GATEWAY_ADMIN_LISTEN_ADDR: 127.0.0.1:8081",
            ),
            "gateway: GATEWAY_ADMIN_LISTEN_ADDR is '127.0.0.1:8081', not every interface on its admin port",
        ),
        (
            broken(
                &original,
                "ports: [\"127.0.0.1:3000:3000\"]",
                "ports: [\"127.0.0.1:3000:3000\", \"127.0.0.1:18081:8081\"]",
            ),
            "gateway: publishes its admin port on the host",
        ),
        (
            broken(&original, "prometheus.yml:ro,z", "prometheus.yml:ro"),
            "prometheus: bind mount ./k8s/components/observability/prometheus-compose.yml:/etc/prometheus/prometheus.yml:ro has no SELinux label option",
        ),
        (
            broken(
                &original,
                "RESULT_LISTEN_ADDR: 0.0.0.0:5001",
                "RESULT_LISTEN_ADDR: 127.0.0.1:5001",
            ),
            "result: RESULT_LISTEN_ADDR is '127.0.0.1:5001', not every interface",
        ),
        (
            broken(
                &original,
                "votemesh-dashboard.json:/var",
                "votemesh-dashbord.json:/var",
            ),
            "votemesh-dashbord.json, which does not exist",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("Dockerfile"), dir.path().join("Dockerfile")).unwrap();
    // The files the observability profile mounts, as they are.
    let config = "k8s/components/observability";
    for file in std::fs::read_dir(repo().join(config)).unwrap() {
        let file = file.unwrap();
        write(
            dir.path().join(config).join(file.file_name()),
            &read(file.path()),
        );
    }
    for (compose, expected) in cases {
        write(dir.path().join("docker-compose.yml"), &compose);
        assert_failure(
            &format!("compose broken to show {expected:?}"),
            &check_compose(dir.path()),
            expected,
        );
    }
    // Prometheus that misses a component.
    write(dir.path().join("docker-compose.yml"), &original);
    let scrape = dir.path().join(config).join("prometheus-compose.yml");
    write(
        &scrape,
        &broken(&read(&scrape), "worker:8080", "worker:8081"),
    );
    assert_failure(
        "compose with a Prometheus that misses the worker",
        &check_compose(dir.path()),
        "prometheus: does not scrape worker:8080 as job worker",
    );
}

#[test]
fn host_ports_agree_across_the_docs_compose_tilt_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = run_tiltfile(&repo().join("Tiltfile"), &[], dir.path());
    assert_success("Tiltfile", &output);
    let summary = dir.path().join("tilt-summary.json");
    let dev = rendered("k8s/overlays/dev", dir.path());
    let components = components(dir.path());
    let check = |root: &Path| {
        script("check_host_ports.py")
            .arg(root)
            .arg(&summary)
            .arg(&dev)
            .arg(&components)
            .output()
            .unwrap()
    };
    assert_success("check_host_ports.py", &check(&repo()));

    let files = [
        "docs/DEPLOYING.md",
        "docs/OBSERVABILITY.md",
        "docker-compose.yml",
        "k8s/kind/cluster.yaml",
        "k8s/kind/ctlptl.yaml",
    ];
    let cases = [
        (
            "docker-compose.yml",
            ("\"127.0.0.1:15001:5001\"", "\"127.0.0.1:15011:5001\""),
            "result on host port 15011, elsewhere 15001",
        ),
        (
            "docs/DEPLOYING.md",
            (
                "-plaintext localhost:15000 votemesh.v1.VoteService/CastVote",
                "-plaintext localhost:15001 votemesh.v1.VoteService/CastVote",
            ),
            "votemesh.v1.VoteService called on result's port 15001",
        ),
        (
            "docs/DEPLOYING.md",
            (
                "Open <http://localhost:31000>",
                "Open <http://localhost:8000>",
            ),
            "localhost:8000 is none of the host ports",
        ),
        (
            "docs/DEPLOYING.md",
            (
                "port-forward svc/vote 15000:5000",
                "port-forward svc/vote 5000:5000",
            ),
            "which macOS's AirPlay Receiver holds",
        ),
        (
            "docs/DEPLOYING.md",
            ("## Develop with Tilt", "## Tilt"),
            "docs/DEPLOYING.md has no section 'Develop with Tilt'",
        ),
        (
            "docs/OBSERVABILITY.md",
            (
                "Open Jaeger on <http://localhost:16686>",
                "Open Jaeger on <http://localhost:16687>",
            ),
            "localhost:16687 is none of the host ports",
        ),
        (
            "docker-compose.yml",
            ("\"127.0.0.1:13000:3000\"", "\"127.0.0.1:13001:3000\""),
            "grafana: Tilt forwards ['13000:3000'], compose publishes ['13001:3000']",
        ),
        (
            "k8s/kind/ctlptl.yaml",
            ("hostPort: 31000", "hostPort: 31001"),
            "differs from k8s/kind/cluster.yaml",
        ),
        (
            "k8s/kind/cluster.yaml",
            ("containerPort: 31000", "containerPort: 30000"),
            "not the dev gateway's NodePort",
        ),
        (
            "k8s/kind/cluster.yaml",
            (
                "image: kindest/node:v1.37.0@sha256:",
                "image: kindest/node:v1.29.2@sha256:",
            ),
            "is older than Kubernetes 1.30",
        ),
    ];
    for (file, (from, to), expected) in cases {
        let root = dir.path().join("copy");
        for name in files {
            let mut contents = read(repo().join(name));
            if name == file {
                contents = broken(&contents, from, to);
            }
            write(root.join(name), &contents);
        }
        assert_failure(
            &format!("{file} broken to show {expected:?}"),
            &check(&root),
            expected,
        );
    }
}

/// The vote bot's image is one CI publishes (at the workspace's version)
/// wherever the component is added to the base, and the one Tilt builds in
/// the dev overlay.
#[test]
fn the_vote_bot_runs_the_published_loadgen_image_and_tilts_own_in_dev() {
    let dir = tempfile::tempdir().unwrap();
    let image_lines = |kustomization: &str| -> Vec<String> {
        read(rendered(kustomization, dir.path()))
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("image:") && line.contains("loadgen"))
            .map(str::to_owned)
            .collect()
    };
    let published = format!(
        "image: ghcr.io/votemesh/votemesh-loadgen:{}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        image_lines(&base_with_component("vote-bot", dir.path())),
        [published]
    );
    let dev = repo().join("k8s/overlays/dev").display().to_string();
    assert_eq!(image_lines(&dev), ["image: votemesh-loadgen:dev"]);
    let workflow = read(repo().join(".github/workflows/images.yml"));
    assert!(
        workflow.contains("for component in vote worker result gateway loadgen; do"),
        "images.yml publishes the loadgen image"
    );
}

#[test]
fn the_ci_workflows_pass_actionlint() {
    for name in ["images.yml", "kind.yml"] {
        let workflow = repo().join(".github/workflows").join(name);
        let output = tool("actionlint").arg(&workflow).output().unwrap();
        assert_success(&format!("actionlint {name}"), &output);
    }

    let dir = tempfile::tempdir().unwrap();
    let images = read(repo().join(".github/workflows/images.yml"));
    let kind = read(repo().join(".github/workflows/kind.yml"));
    let cases = [
        (
            broken(&images, "registry: ghcr.io", "registri: ghcr.io"),
            "input \"registri\" is not defined",
        ),
        (
            broken(&images, "${{ github.ref_name }}", "${{ github.ref_nam }}"),
            "property \"ref_nam\" is not defined",
        ),
        (
            broken(&images, "docker/login-action@v4", "docker/login-action@v3"),
            "deprecated",
        ),
        (
            broken(&kind, "if: failure()", "if: failed()"),
            "undefined function \"failed\"",
        ),
        (
            broken(
                &kind,
                "actions/upload-artifact@v6",
                "actions/upload-artifact@v4",
            ),
            "deprecated",
        ),
    ];
    for (contents, expected) in cases {
        let path = dir.path().join("workflow.yml");
        write(&path, &contents);
        let output = tool("actionlint").arg(&path).output().unwrap();
        assert_failure("a broken workflow", &output, expected);
    }
}

/// `.github/workflows/kind.yml` runs on a real cluster only what
/// docs/DEPLOYING.md tells a user to run, line for line.
#[test]
fn the_kind_workflow_runs_the_documented_commands() {
    let check = |workflow: &Path, doc: &Path| {
        script("check_workflow_docs.py")
            .arg(workflow)
            .arg(doc)
            .output()
            .unwrap()
    };
    let workflow = repo().join(".github/workflows/kind.yml");
    let doc = repo().join("docs/DEPLOYING.md");
    assert_success("check_workflow_docs.py", &check(&workflow, &doc));

    let dir = tempfile::tempdir().unwrap();
    let broken_doc = dir.path().join("DEPLOYING.md");
    write(
        &broken_doc,
        &broken(
            &read(&doc),
            "kubectl apply -k k8s/overlays/dev\n",
            "kubectl apply -k k8s/overlays/dev --server-side\n",
        ),
    );
    assert_failure(
        "a doc whose command differs from CI's",
        &check(&workflow, &broken_doc),
        "'kubectl apply -k k8s/overlays/dev' is not a command of",
    );
    let broken_workflow = dir.path().join("kind.yml");
    write(
        &broken_workflow,
        &broken(
            &read(&workflow),
            "      - uses: actions/checkout@v5\n",
            "      - uses: actions/checkout@v5\n      - uses: helm/kind-action@v1\n",
        ),
    );
    assert_failure(
        "a workflow that sets the cluster up with an action",
        &check(&broken_workflow, &doc),
        "uses helm/kind-action@v1",
    );
}

/// A copy of `k8s/` in `dir`, to break.
fn k8s_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("k8s");
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("k8s"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success(), "copying k8s/");
    copy
}

/// A kustomization in `dir` that is `overlay` (under `k8s`) plus the mtls
/// components (mounts and settings, certificates from cert-manager), as a
/// path `kubectl kustomize` takes.
fn with_mtls(dir: &Path, k8s: &Path, overlay: &str) -> String {
    with_components(dir, k8s, overlay, &["mtls", "mtls-cert-manager"])
}

/// A kustomization in `dir` that is `overlay` (under `k8s`) plus
/// `components` (under `k8s/components`).
fn with_components(dir: &Path, k8s: &Path, overlay: &str, components: &[&str]) -> String {
    let kustomization = dir.join(format!(
        "{}-{}",
        overlay.replace('/', "-"),
        components.join("-")
    ));
    // kustomize takes only relative paths to other kustomizations.
    let up = "../".repeat(kustomization.components().count() - 1);
    let k8s = format!("{up}{}", k8s.display()).replace("//", "/");
    let components: Vec<String> = components
        .iter()
        .map(|component| format!("{k8s}/components/{component}"))
        .collect();
    write(
        kustomization.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{k8s}/{overlay}]\ncomponents: [{}]\n",
            components.join(", ")
        ),
    );
    kustomization.display().to_string()
}

/// `check_mtls.py` on a rendered kustomization; it writes the objects of
/// built-in kinds to `builtin`.
fn check_mtls(rendered: &Path, components: &Path, builtin: &Path) -> Output {
    script("check_mtls.py")
        .arg(rendered)
        .arg(components)
        .arg(builtin)
        .output()
        .unwrap()
}

#[test]
fn the_mtls_component_issues_mounts_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let components = components(dir.path());
    let k8s = repo().join("k8s");
    for overlay in ["overlays/prod", "overlays/dev", "base"] {
        let kustomization = with_mtls(dir.path(), &k8s, overlay);
        let rendered = rendered(&kustomization, dir.path());
        let builtin = dir.path().join("builtin.yaml");
        assert_success(
            &format!("check_mtls.py {overlay} + mtls"),
            &check_mtls(&rendered, &components, &builtin),
        );
        // cert-manager's kinds have no schema in kubernetes-validate: the
        // built-in kinds are validated strictly, the rest by check_mtls.py.
        let validated = tool("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(&builtin)
            .output()
            .unwrap();
        assert_success(
            &format!("kubernetes-validate --strict {overlay} + mtls"),
            &validated,
        );
    }

    // The path without cert-manager (the Secrets made by
    // tools/mtls-dev-certs.sh): the mtls component alone, built-in kinds
    // only, validated strictly.
    let dev = with_components(dir.path(), &k8s, "overlays/dev", &["mtls"]);
    let rendered_dev = rendered(&dev, dir.path());
    assert!(!read(&rendered_dev).contains("cert-manager.io"));
    let validated = tool("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&rendered_dev)
        .output()
        .unwrap();
    assert_success(
        "kubernetes-validate --strict overlays/dev + mtls alone",
        &validated,
    );

    // Broken copies of the components fail the check.
    for (file, from, to, expected) in [
        (
            "certificates.yaml",
            "    - vote-pods\n",
            "",
            "does not name vote-pods",
        ),
        (
            "certificates.yaml",
            "  dnsNames:",
            "  dnsName:",
            "unknown fields",
        ),
        ("certificates.yaml", "  isCA: true\n", "", "isCA"),
        (
            "workloads.yaml",
            "          readinessProbe:\n            grpc: {port: 8081}",
            "          readinessProbe:\n            grpc: {port: 5000}",
            "readinessProbe asks port 5000",
        ),
        (
            "workloads.yaml",
            "value: /var/run/votemesh/tls/ca.crt",
            "value: /var/run/votemesh/ca.crt",
            "TLS_CA_FILE",
        ),
        (
            "workloads.yaml",
            "  name: vote-pods\nspec:\n  ports:\n    - {name: grpc, port: 5000, appProtocol: https}",
            "  name: vote-pods\nspec:\n  ports:\n    - {name: grpc, port: 5000, appProtocol: kubernetes.io/h2c}",
            "Service vote-pods port grpc: appProtocol 'kubernetes.io/h2c' on the TLS business port",
        ),
        (
            "workloads.yaml",
            "value: \"spiffe://votemesh/gateway,spiffe://votemesh/operator\"",
            "value: \"spiffe://votemesh/operator\"",
            "does not allow the gateway",
        ),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let copy = k8s_copy(scratch.path());
        let component = if file == "certificates.yaml" {
            "mtls-cert-manager"
        } else {
            "mtls"
        };
        let path = copy.join("components").join(component).join(file);
        write(&path, &broken(&read(&path), from, to));
        let kustomization = with_mtls(scratch.path(), &copy, "overlays/prod");
        let rendered = rendered(&kustomization, scratch.path());
        assert_failure(
            &format!("check_mtls.py with {file}: {to:?}"),
            &check_mtls(&rendered, &components, &scratch.path().join("builtin.yaml")),
            expected,
        );
    }
}

/// A fork names its image owner in one place
/// (`k8s/components/published-images`), and every flavour follows: the base
/// and prod (with the vote bot and with mutual TLS too) deploy the fork's
/// published images and keep every promise, and dev still runs exactly the
/// `votemesh-<name>:dev` images Tilt builds (the Tiltfile test checks those
/// names against the dev overlay), with no trace of the old owner anywhere.
#[test]
fn a_fork_changes_the_image_owner_in_one_place_and_every_flavour_follows() {
    let dir = tempfile::tempdir().unwrap();
    let components = components(dir.path());
    let k8s = k8s_copy(dir.path());
    let place = k8s.join("components/published-images/kustomization.yaml");
    let fork = "ghcr.io/someone-else";
    write(
        &place,
        &broken(
            &read(&place),
            "registry=ghcr.io/votemesh",
            &format!("registry={fork}"),
        ),
    );
    let version = env!("CARGO_PKG_VERSION");
    let k8s_path = k8s.display().to_string();
    let images = |rendered: &Path| -> Vec<String> {
        let text = read(rendered);
        assert!(
            !text.contains("ghcr.io/votemesh"),
            "{} still names ghcr.io/votemesh",
            rendered.display()
        );
        let mut images: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter_map(|line| line.strip_prefix("image: "))
            .filter(|image| image.contains("votemesh-"))
            .map(str::to_owned)
            .collect();
        images.sort();
        images
    };
    let published = |names: &[&str]| -> Vec<String> {
        let mut images: Vec<String> = names
            .iter()
            .map(|name| format!("{fork}/votemesh-{name}:{version}"))
            .collect();
        images.sort();
        images
    };
    let services = ["vote", "worker", "result", "gateway"];
    for (kustomization, flavour) in [
        (k8s_path.clone(), "base"),
        (format!("{k8s_path}/overlays/prod"), "prod"),
        (format!("{k8s_path}/overlays/dev"), "dev"),
    ] {
        let rendered = rendered(&kustomization, dir.path());
        let output = script("check_manifests.py")
            .arg(&rendered)
            .arg(&components)
            .arg(flavour)
            .arg(version)
            .arg(fork)
            .output()
            .unwrap();
        assert_success(&format!("check_manifests.py {flavour} of a fork"), &output);
        let expected = if flavour == "dev" {
            let mut dev: Vec<String> = services
                .iter()
                .chain(["loadgen"].iter())
                .map(|name| format!("votemesh-{name}:dev"))
                .collect();
            dev.sort();
            dev
        } else {
            published(&services)
        };
        assert_eq!(images(&rendered), expected, "{flavour} of a fork");
    }
    // The base with the vote bot, and prod with mutual TLS.
    let with_bot = dir.path().join("fork-with-bot");
    write(
        with_bot.join("kustomization.yaml"),
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{up}{k8s_path}/base]\n\
             components: [{up}{k8s_path}/components/vote-bot, {up}{k8s_path}/components/published-images]\n",
            up = "../".repeat(with_bot.components().count() - 1),
        )
        .replace("//", "/"),
    );
    let rendered_bot = rendered(&with_bot.display().to_string(), dir.path());
    assert_eq!(
        images(&rendered_bot),
        published(&["vote", "worker", "result", "gateway", "loadgen"])
    );
    let prod_mtls = with_mtls(dir.path(), &k8s, "overlays/prod");
    assert_eq!(
        images(&rendered(&prod_mtls, dir.path())),
        published(&services)
    );
}

/// `k8s/overlays/prod` of a copy of `k8s/` with `components` added to its
/// own list (after published-images), so that its edge.env replacements
/// reach what they add; rendered into `dir`.
fn prod_with(dir: &Path, components: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let k8s = k8s_copy(dir);
    let kustomization = k8s.join("overlays/prod/kustomization.yaml");
    let listed: String = components
        .iter()
        .map(|c| format!("  - ../../components/{c}\n"))
        .collect();
    write(
        &kustomization,
        &broken(
            &read(&kustomization),
            "\n  - ../../components/published-images\n",
            &format!("\n  - ../../components/published-images\n{listed}"),
        ),
    );
    rendered(&k8s.join("overlays/prod").display().to_string(), dir)
}

/// The prod overlay's public entry in each variant: the HTTPRoute, the
/// Ingress of `k8s/components/ingress` and the GRPCRoute of
/// `k8s/components/public-grpc` reach the gateway's public paths (and the
/// vote and result APIs), never /metrics, /healthz or /readyz; edge.env
/// fills every placeholder; the Ingress has a class and TLS.
#[test]
fn the_public_edge_reaches_public_paths_only() {
    let dir = tempfile::tempdir().unwrap();
    let components = components(dir.path());
    let version = env!("CARGO_PKG_VERSION");
    let check = |path: &Path| check_manifests(path, &components, "prod");
    let ingress = prod_with(&dir.path().join("ingress"), &["ingress"]);
    let grpc = prod_with(&dir.path().join("grpc"), &["public-grpc"]);
    for (what, path) in [("ingress", &ingress), ("public-grpc", &grpc)] {
        let text = read(path);
        for placeholder in ["HOSTNAME", "GATEWAY-", "INGRESS-CLASS", "CLUSTER-ISSUER"] {
            assert!(!text.contains(placeholder), "{what}: {placeholder} left");
        }
        assert_success(&format!("check_manifests.py prod + {what}"), &check(path));
        let validated = tool("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(path)
            .output()
            .unwrap();
        assert_success(&format!("kubernetes-validate prod + {what}"), &validated);
    }
    let ingress_text = read(&ingress);
    assert!(
        !ingress_text.contains("kind: HTTPRoute"),
        "the Ingress replaces the HTTPRoute"
    );
    assert!(ingress_text.contains(&format!("ghcr.io/votemesh/votemesh-gateway:{version}")));
    let grpc_text = read(&grpc);
    let cases = [
        (
            broken(&ingress_text, "  ingressClassName: traefik\n", ""),
            "no ingressClassName",
        ),
        (
            broken(
                &ingress_text,
                "path: /results\n        pathType: Exact",
                "path: /\n        pathType: Prefix",
            ),
            "ingress/gateway: Prefix / makes the operators' /metrics public",
        ),
        (
            broken(
                &ingress_text,
                "  tls:\n  - hosts:\n    - votemesh.example.com",
                "  tls:\n  - hosts:\n    - other.example.com",
            ),
            "has no TLS",
        ),
        (
            broken(
                &grpc_text,
                "service: votemesh.v1.ResultService",
                "service: grpc.health.v1.Health",
            ),
            "reaches more than the vote and result APIs",
        ),
        (
            broken(
                &grpc_text,
                "      port: 5001\n    matches:",
                "      port: 5002\n    matches:",
            ),
            "is not a gRPC Service port",
        ),
    ];
    for (manifests, expected) in cases {
        let path = dir.path().join("broken.yaml");
        write(&path, &manifests);
        assert_failure(
            &format!("prod edge broken to show {expected:?}"),
            &check(&path),
            expected,
        );
    }
}

/// `check_cnpg.py` on a rendered kustomization; it writes the objects of
/// built-in kinds to `builtin`, and checks the operator release
/// `docs/DEPLOYING.md` installs.
fn check_cnpg(rendered: &Path, builtin: &Path, docs: &Path) -> Output {
    script("check_cnpg.py")
        .arg(rendered)
        .arg(builtin)
        .arg(docs)
        .output()
        .unwrap()
}

fn check_redis_cluster_job(rendered: &Path) -> Output {
    script("check_redis_cluster_job.py")
        .arg(rendered)
        .output()
        .unwrap()
}

/// The scaled-out flavour (`k8s/components/scale-out`): on the dev overlay
/// (`k8s/overlays/scale-out`, what the kind command deploys) and on the
/// base, the CloudNativePG Clusters match the vendored CRD schema of the
/// release the docs install, the built-in kinds validate strictly, every
/// promise of `check_manifests.py` holds (the scaled-out ones included),
/// and the Redis Cluster formation Job's script forms the cluster once
/// against fake nodes. Broken copies fail.
#[test]
fn the_scaled_out_flavour_validates_and_keeps_its_promises() {
    let dir = tempfile::tempdir().unwrap();
    let components = components(dir.path());
    let docs = repo().join("docs/DEPLOYING.md");
    let builtin = dir.path().join("builtin.yaml");
    let with_base = base_with_component("scale-out", dir.path());
    for (kustomization, flavour) in [("k8s/overlays/scale-out", "dev"), (&with_base, "base")] {
        let rendered = rendered(kustomization, dir.path());
        assert_success(
            &format!("check_cnpg.py {kustomization}"),
            &check_cnpg(&rendered, &builtin, &docs),
        );
        let validated = tool("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(&builtin)
            .output()
            .unwrap();
        assert_success(
            &format!("kubernetes-validate --strict {kustomization} (built-in kinds)"),
            &validated,
        );
        assert_success(
            &format!("check_manifests.py {flavour} ({kustomization})"),
            &check_manifests(&rendered, &components, flavour),
        );
        assert_success(
            &format!("check_redis_cluster_job.py {kustomization}"),
            &check_redis_cluster_job(&rendered),
        );
    }

    let scaled = read(rendered("k8s/overlays/scale-out", dir.path()));
    let path = dir.path().join("broken.yaml");
    // The CRD schema: a misspelt field, a wrong type.
    for (from, to, expected) in [
        (
            "enablePodAntiAffinity: true",
            "enablePodAntiAfinity: true",
            "'enablePodAntiAfinity' was unexpected",
        ),
        ("instances: 2", "instances: '2'", "is not of type 'integer'"),
    ] {
        write(&path, &broken(&scaled, from, to));
        assert_failure(
            &format!("check_cnpg.py with {to:?}"),
            &check_cnpg(&path, &builtin, &docs),
            expected,
        );
    }
    // Docs installing another operator release than the schema's.
    let other_docs = dir.path().join("DEPLOYING.md");
    write(
        &other_docs,
        &broken(
            &read(&docs),
            "releases/cnpg-1.30.0.yaml",
            "releases/cnpg-1.29.1.yaml",
        ),
    );
    write(&path, &scaled);
    assert_failure(
        "check_cnpg.py with docs installing 1.29.1",
        &check_cnpg(&path, &builtin, &other_docs),
        "installs CloudNativePG ['1.29.1', '1.30.0']",
    );

    // The scaled-out promises.
    let base = read(rendered(&with_base, dir.path()));
    for (flavour, manifests, expected) in [
        (
            "dev",
            broken(
                &scaled,
                "- name: DB_HOSTS\n          valueFrom:\n            configMapKeyRef:\n              key: DB_HOSTS",
                "- name: DB_HOST\n          valueFrom:\n            configMapKeyRef:\n              key: DB_HOST\n        - name: DB_HOSTS\n          valueFrom:\n            configMapKeyRef:\n              key: DB_HOSTS",
            ),
            "sets DB_HOST beside DB_HOSTS",
        ),
        (
            "dev",
            broken(
                &scaled,
                "DB_HOSTS: votes-0-rw,votes-1-rw",
                "DB_HOSTS: votes-0-rw,votes-2-rw",
            ),
            "is not the read-write Services",
        ),
        (
            "dev",
            broken(&scaled, "DB_USER: votemesh", "DB_USER: postgres"),
            "cannot be the superuser",
        ),
        (
            "dev",
            broken(&scaled, "replicas: 4", "replicas: 3"),
            "3 replicas for 16 shards",
        ),
        (
            "dev",
            broken(&scaled, "- $(POD_NAME).redis-cluster", "- $(POD_IP)"),
            "--cluster-announce-hostname is '$(POD_IP)'",
        ),
        (
            "dev",
            broken(&scaled, "- noeviction", "- allkeys-lru"),
            "statefulset/redis-cluster/redis: maxmemory-policy allkeys-lru",
        ),
        (
            "dev",
            broken(
                &scaled,
                "REDIS_REPLICA_ACKS: \"1\"",
                "REDIS_REPLICA_ACKS: \"2\"",
            ),
            "REDIS_REPLICA_ACKS 2",
        ),
        (
            "dev",
            broken(
                &scaled,
                "          app.kubernetes.io/name: redis-cluster\n    ports:\n    - port: 16379",
                "          app.kubernetes.io/name: vote\n    ports:\n    - port: 16379",
            ),
            "redis-cluster is reachable on port 16379 from ['vote']",
        ),
        (
            "dev",
            broken(
                &scaled,
                "kubernetes.io/metadata.name: cnpg-system",
                "kubernetes.io/metadata.name: cnpg",
            ),
            "expected only ['cnpg-system/cloudnative-pg', 'cnpg:votes-0', 'result', 'worker']",
        ),
        (
            "dev",
            broken(&scaled, "maxUnavailable: 1", "maxUnavailable: 0"),
            "every kubectl drain blocks",
        ),
        (
            "base",
            broken(&base, "owner: votemesh", "owner: app"),
            "cluster/votes-0: database 'votes' owned by 'app'",
        ),
    ] {
        write(&path, &manifests);
        assert_failure(
            &format!("{flavour} scaled-out manifests broken to show {expected:?}"),
            &check_manifests(&path, &components, flavour),
            expected,
        );
    }

    // The formation Job's script: creating again on a formed cluster.
    write(
        &path,
        &broken(&scaled, "if [ -z \"$formed\" ]; then", "if true; then"),
    );
    assert_failure(
        "check_redis_cluster_job.py with a script that always creates",
        &check_redis_cluster_job(&path),
        "re-run on the formed cluster",
    );
}
