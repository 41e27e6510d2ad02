"""Checks the promises of votemesh's rendered Kubernetes manifests.

Usage: check_manifests.py RENDERED_YAML COMPONENTS_JSON

COMPONENTS_JSON maps each component (vote, worker, result, gateway) to what
its binary really does, taken from its clap definition by the Rust test:
{"env": [names it reads], "port": listen port, "protocol": "grpc"|"http"}.
Prints every broken promise and exits 1 if there is any.
"""

import base64
import json
import sys

import yaml

REPLICAS = {"vote": 3, "worker": 2, "result": 2, "gateway": 2}
AUTOSCALED = {"vote", "gateway"}
# Who may reach each data store (NetworkPolicy ingress).
STORE_CLIENTS = {"postgres": {"worker", "result"}, "redis": {"vote", "worker"}}

failures = []


def fail(message):
    failures.append(message)


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def check_container_basics(owner, pod, container):
    where = f"{owner}/{container['name']}"
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for key in ("cpu", "memory"):
            if key not in resources.get(part, {}):
                fail(f"{where}: no {part}.{key}")
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        fail(f"{where}: runAsNonRoot is not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{where}: capabilities are not all dropped")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        fail(f"{where}: seccompProfile is not RuntimeDefault")


def check_service_account(owner, pod, accounts):
    name = pod.get("serviceAccountName")
    if name != owner:
        fail(f"{owner}: runs as service account {name!r}, not its own")
    elif accounts.get(name, {}).get("automountServiceAccountToken") is not False:
        fail(f"{owner}: service account {name} mounts its token")
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{owner}: pod mounts a service account token")


def check_component(name, spec, deployment):
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    where = f"deployment/{name}"
    image = container["image"].split(":")[0]
    if image != f"votemesh-{name}":
        fail(f"{where}: image {container['image']} is not votemesh-{name}")
    replicas = deployment["spec"].get("replicas")
    if name in AUTOSCALED:
        if replicas is not None:
            fail(f"{where}: sets replicas although its HorizontalPodAutoscaler owns them")
    elif replicas != REPLICAS[name]:
        fail(f"{where}: {replicas} replicas, expected {REPLICAS[name]}")
    ports = [p["containerPort"] for p in container.get("ports", [])]
    if ports != [spec["port"]]:
        fail(f"{where}: container ports {ports}, the binary listens on {spec['port']}")

    env_names = [e["name"] for e in container.get("env", [])]
    if container.get("envFrom"):
        fail(f"{where}: envFrom hides which variables it gets; list them")
    unknown = sorted(set(env_names) - set(spec["env"]))
    if unknown:
        fail(f"{where}: sets {unknown}, which votemesh-{name} does not read")
    for entry in container.get("env", []):
        if entry["name"] == "DB_PASSWORD" and "secretKeyRef" not in entry.get("valueFrom", {}):
            fail(f"{where}: DB_PASSWORD does not come from a Secret")

    probes = {k: container.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        if not probe:
            fail(f"{where}: no {kind}")
    if spec["protocol"] == "grpc":
        live, ready, start = probes["livenessProbe"] or {}, probes["readinessProbe"] or {}, probes["startupProbe"] or {}
        if live.get("grpc") != {"port": spec["port"], "service": "liveness"}:
            fail(f"{where}: liveness is not grpc {{port: {spec['port']}, service: liveness}}: {live}")
        if ready.get("grpc", {}).get("port") != spec["port"] or ready["grpc"].get("service", "") != "":
            fail(f"{where}: readiness is not grpc {{port: {spec['port']}}}: {ready}")
        if start.get("grpc", {}).get("port") != spec["port"]:
            fail(f"{where}: startup probe is not gRPC on {spec['port']}: {start}")
    else:
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            http = (probes[kind] or {}).get("httpGet", {})
            if http.get("path") != path:
                fail(f"{where}: {kind} is not GET {path}: {probes[kind]}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if grace < pre_stop + 15:
        fail(f"{where}: terminationGracePeriodSeconds {grace} leaves under 15 s to drain after a {pre_stop} s preStop")


def check_secrets_stay_secret(objects):
    values = set()
    for secret in by_kind(objects, "Secret").values():
        values.update(v for v in secret.get("stringData", {}).values() if v)
        values.update(base64.b64decode(v).decode() for v in secret.get("data", {}).values() if v)
    for obj in objects:
        if obj["kind"] in ("ConfigMap", "Deployment", "StatefulSet"):
            text = yaml.safe_dump(obj)
            for value in values:
                if value in text:
                    fail(f"{obj['kind'].lower()}/{obj['metadata']['name']}: holds a Secret value")


def allowed_clients(policies, store):
    """The component names allowed to reach pods named `store`."""
    clients = set()
    for policy in policies.values():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/name") != store:
            continue
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if not sources:
                clients.add("*")
            for source in sources or []:
                name = source.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                clients.add(name or "*")
    return clients


def main(rendered_path, components_path):
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    with open(components_path) as f:
        components = json.load(f)

    deployments = by_kind(objects, "Deployment")
    statefulsets = by_kind(objects, "StatefulSet")
    accounts = by_kind(objects, "ServiceAccount")
    for name, spec in components.items():
        if name not in deployments:
            fail(f"no deployment/{name}")
            continue
        check_component(name, spec, deployments[name])
    for owner, workload in list(deployments.items()) + list(statefulsets.items()):
        pod = workload["spec"]["template"]["spec"]
        check_service_account(owner, pod, accounts)
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            check_container_basics(owner, pod, container)
        if pod.get("initContainers"):
            fail(f"{owner}: init containers (services ride out missing dependencies by retrying)")

    for store in ("postgres", "redis"):
        if not statefulsets.get(store, {}).get("spec", {}).get("volumeClaimTemplates"):
            fail(f"statefulset/{store}: no PersistentVolumeClaim")

    policies = by_kind(objects, "NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies.values()):
        fail("no default-deny ingress NetworkPolicy")
    for store, expected in STORE_CLIENTS.items():
        clients = allowed_clients(policies, store)
        if clients != expected:
            fail(f"{store} is reachable from {sorted(clients)}, expected only {sorted(expected)}")

    pdbs = by_kind(objects, "PodDisruptionBudget")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    for name in components:
        if name not in pdbs:
            fail(f"deployment/{name}: no PodDisruptionBudget")
    for name in AUTOSCALED:
        hpa = hpas.get(name, {}).get("spec", {})
        if hpa.get("scaleTargetRef", {}).get("name") != name:
            fail(f"deployment/{name}: no HorizontalPodAutoscaler")
        elif hpa.get("minReplicas") != REPLICAS[name]:
            fail(f"deployment/{name}: autoscales from {hpa.get('minReplicas')}, expected {REPLICAS[name]}")

    services = by_kind(objects, "Service")
    for name in ("vote", "result", "redis", "postgres"):
        spec = services.get(name, {}).get("spec", {})
        if name not in services or spec.get("type", "ClusterIP") != "ClusterIP" or spec.get("clusterIP") == "None":
            fail(f"service/{name}: missing or not a ClusterIP service")
    gateway = services.get("gateway", {}).get("spec", {})
    if gateway.get("type") != "LoadBalancer" or not all(p.get("nodePort") for p in gateway.get("ports", [])):
        fail("service/gateway: not a LoadBalancer with a NodePort")

    configmaps = by_kind(objects, "ConfigMap")
    if "app-config" not in configmaps or "db-credentials" not in by_kind(objects, "Secret"):
        fail("the ConfigMap app-config or the Secret db-credentials is missing")
    check_secrets_stay_secret(objects)

    for message in failures:
        print(f"FAIL {message}")
    print(f"{len(objects)} objects checked, {len(failures)} broken promises")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
