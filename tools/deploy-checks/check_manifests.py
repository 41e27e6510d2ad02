"""Checks the promises of votemesh's rendered Kubernetes manifests.

Usage: check_manifests.py RENDERED_YAML COMPONENTS_JSON FLAVOUR VERSION

RENDERED_YAML is `kubectl kustomize` of k8s/ (FLAVOUR base), of
k8s/overlays/dev (dev) or of k8s/overlays/prod (prod). COMPONENTS_JSON maps
each component (vote, worker, result, gateway) to what its binary really
does, taken from its clap definition by the Rust test: {"env": [names it
reads], "port": listen port, "protocol": "grpc"|"http"}. VERSION is the
workspace version, the tag CI publishes the images under.

Every flavour keeps the base's promises (probes, resources, security
contexts, env names, secrets, policies, generated config); then
- base: production replica counts and autoscalers, the published images,
  the gateway on a LoadBalancer with NodePort 31000;
- dev: one replica each, no autoscaler, local images, writable root for
  the app containers only, the gateway on NodePort 31000;
- prod: the base's counts and autoscalers, pods spread over zones and
  nodes, the namespace enforcing the restricted Pod Security Standard, an
  Ingress to the gateway with SSE-friendly timeouts, and no Secret in the
  output (db-credentials comes from outside the repository).
Prints every broken promise and exits 1 if there is any.
"""

import base64
import json
import re
import sys

import yaml

REPLICAS = {"vote": 3, "worker": 2, "result": 2, "gateway": 2}
AUTOSCALED = {"vote", "gateway"}
# Where CI publishes the images (.github/workflows/images.yml).
REGISTRY = "ghcr.io/votemesh"
# The gateway's NodePort, mapped to the host by k8s/kind/cluster.yaml.
GATEWAY_NODE_PORT = 31000
# The name kustomize's generators give: the name, a dash, a 10-character hash.
GENERATED = r"{}-[a-z0-9]{{10}}"
# A live results stream must outlive this (seconds) at the Ingress.
SSE_MIN_TIMEOUT = 300
# Who may reach each data store (NetworkPolicy ingress).
STORE_CLIENTS = {"postgres": {"worker", "result"}, "redis": {"vote", "worker"}}

failures = []


def fail(message):
    failures.append(message)


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def check_container_basics(owner, pod, container, writable_root=False):
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
    if writable_root:
        if sc.get("readOnlyRootFilesystem") is not False:
            fail(f"{where}: readOnlyRootFilesystem is not false (Tilt's live update writes the binary)")
    elif sc.get("readOnlyRootFilesystem") is not True:
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


def check_component(name, spec, deployment, flavour, version):
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    where = f"deployment/{name}"
    expected_image = f"votemesh-{name}:dev" if flavour == "dev" else f"{REGISTRY}/votemesh-{name}:{version}"
    if container["image"] != expected_image:
        fail(f"{where}: image {container['image']} is not {expected_image}")
    replicas = deployment["spec"].get("replicas")
    if flavour == "dev":
        if replicas != 1:
            fail(f"{where}: {replicas} replicas, expected 1 on a laptop")
    elif name in AUTOSCALED:
        if replicas is not None:
            fail(f"{where}: sets replicas although its HorizontalPodAutoscaler owns them")
    elif replicas != REPLICAS[name]:
        fail(f"{where}: {replicas} replicas, expected {REPLICAS[name]}")
    if flavour == "prod":
        spread = {c.get("topologyKey"): c for c in pod.get("topologySpreadConstraints", [])}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            keys = spread.get(key, {}).get("matchLabelKeys", [])
            if "app.kubernetes.io/name" not in keys:
                fail(f"{where}: pods are not spread over {key} per component")
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


def check_generated_config(objects, flavour):
    """app-config (and, but in prod, db-credentials) carry a content hash in
    their names, and the pods refer to exactly the objects rendered."""
    configmaps = set(by_kind(objects, "ConfigMap"))
    secrets = set(by_kind(objects, "Secret"))
    names = {"ConfigMap": configmaps, "Secret": secrets}
    expected = [("ConfigMap", "app-config")] + ([] if flavour == "prod" else [("Secret", "db-credentials")])
    for kind, name in expected:
        if not any(re.fullmatch(GENERATED.format(name), n) for n in names[kind]):
            fail(f"{kind.lower()} {name}: not generated with a content hash ({sorted(names[kind])})")
    if flavour == "prod" and secrets:
        fail(f"prod renders Secrets {sorted(secrets)}: the password must not come from the repository")
    for workload in list(by_kind(objects, "Deployment").values()) + list(by_kind(objects, "StatefulSet").values()):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                source = entry.get("valueFrom", {})
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = source.get(key, {}).get("name")
                    if ref is None:
                        continue
                    external = kind == "Secret" and flavour == "prod" and ref == "db-credentials"
                    if ref not in names[kind] and not external:
                        fail(f"{workload['metadata']['name']}: {entry['name']} refers to {kind} {ref}, which is not rendered")


def check_exposure(objects, flavour):
    """How the gateway is reached from outside the cluster."""
    gateway = by_kind(objects, "Service").get("gateway", {}).get("spec", {})
    ports = gateway.get("ports", [])
    if flavour == "prod":
        if gateway.get("type", "ClusterIP") != "ClusterIP":
            fail(f"service/gateway: {gateway.get('type')} in prod, expected ClusterIP behind the Ingress")
        ingresses = by_kind(objects, "Ingress")
        backends = [
            path.get("backend", {}).get("service", {})
            for ingress in ingresses.values()
            for rule in ingress["spec"].get("rules", [])
            for path in rule.get("http", {}).get("paths", [])
        ]
        if not any(b.get("name") == "gateway" for b in backends):
            fail("prod: no Ingress routes to service/gateway")
        for name, ingress in ingresses.items():
            notes = ingress["metadata"].get("annotations", {})
            for key in ("proxy-read-timeout", "proxy-send-timeout"):
                value = notes.get(f"nginx.ingress.kubernetes.io/{key}", "60")
                if int(value) < SSE_MIN_TIMEOUT:
                    fail(f"ingress/{name}: {key} {value} s cuts the live results stream")
            if notes.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
                fail(f"ingress/{name}: proxy buffering holds back server-sent events")
        namespace = by_kind(objects, "Namespace").get("votemesh", {})
        labels = namespace.get("metadata", {}).get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            fail("namespace/votemesh: does not enforce the restricted Pod Security Standard")
    else:
        expected = "LoadBalancer" if flavour == "base" else "NodePort"
        if gateway.get("type") != expected or [p.get("nodePort") for p in ports] != [GATEWAY_NODE_PORT]:
            fail(f"service/gateway: not a {expected} with NodePort {GATEWAY_NODE_PORT}: {gateway}")


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


def main(rendered_path, components_path, flavour, version):
    if flavour not in ("base", "dev", "prod"):
        fail(f"unknown flavour {flavour}")
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
        check_component(name, spec, deployments[name], flavour, version)
    for owner, workload in list(deployments.items()) + list(statefulsets.items()):
        pod = workload["spec"]["template"]["spec"]
        check_service_account(owner, pod, accounts)
        writable = flavour == "dev" and owner in components
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            check_container_basics(owner, pod, container, writable)
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
    if flavour == "dev":
        if hpas:
            fail(f"dev: HorizontalPodAutoscalers {sorted(hpas)} would scale past one replica")
    for name in AUTOSCALED if flavour != "dev" else ():
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
    # gRPC is cleartext HTTP/2: say so, or a mesh or load balancer may speak
    # HTTP/1.1 to it.
    grpc_ports = {spec["port"] for spec in components.values() if spec["protocol"] == "grpc"}
    for name, service in services.items():
        for port in service["spec"].get("ports", []):
            if port.get("port") in grpc_ports and port.get("appProtocol") != "kubernetes.io/h2c":
                fail(f"service/{name}: gRPC port {port.get('port')} has appProtocol {port.get('appProtocol')!r}, not kubernetes.io/h2c")
    check_exposure(objects, flavour)
    check_generated_config(objects, flavour)
    check_secrets_stay_secret(objects)

    for message in failures:
        print(f"FAIL {message}")
    print(f"{flavour}: {len(objects)} objects checked, {len(failures)} broken promises")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
