"""Checks that the host ports agree everywhere a developer meets them.

Usage: check_host_ports.py REPO_ROOT TILT_SUMMARY_JSON DEV_RENDERED_YAML COMPONENTS_JSON

Tilt's port forwards (from run_tiltfile.py's summary), compose's published
ports, the kind cluster's port mappings and the sections of the docs a
developer follows (DOC_SECTIONS: docs/DEPLOYING.md's Kubernetes, Tilt and
Compose sections, docs/OBSERVABILITY.md's walk-through) must give each
component the same host port, and
forward it to the port its binary listens on (COMPONENTS_JSON). No host
port may be one a stock macOS holds (AirPlay Receiver: 5000 and 7000). The
observability UIs (Grafana, Jaeger, Prometheus) must have the same host
port from Tilt and compose, apart from the components'. The kind mapping
must publish the dev overlay's gateway NodePort, and
k8s/kind/ctlptl.yaml must describe the same cluster as k8s/kind/cluster.yaml,
whose every node pins its image by digest to Kubernetes MIN_KUBERNETES or
later (kind's default image depends on the kind release).
In those sections, every localhost:PORT must be one of these ports,
every `kubectl port-forward svc/NAME HOST:CONTAINER` must match, and every
grpcurl call must go to the component that serves the method it names.
"""

import json
import os
import re
import sys

import yaml

root, summary_path, dev_path, components_path = sys.argv[1:5]
problems = []
TAKEN_ON_MACOS = {5000, 7000}
TILT_UI = 10350
# The `## ` sections of the docs that name host ports, by file.
DOC_SECTIONS = {
    "docs/DEPLOYING.md": ("Run it on Kubernetes", "Develop with Tilt", "Run it with Docker Compose"),
    "docs/OBSERVABILITY.md": ("See a vote in traces and metrics",),
}
# The observability stack's UIs: the same host port from Tilt and compose,
# to the same container port.
UIS = ("grafana", "jaeger", "prometheus")
SERVES = {"votemesh.v1.VoteService": "vote", "votemesh.v1.ResultService": "result", "votemesh.v1.WorkerService": "worker"}

with open(summary_path) as f:
    summary = json.load(f)
with open(components_path) as f:
    # The vote bot is a client ("client": true): it has no port to forward.
    components = {n: s for n, s in json.load(f).items() if not s.get("client")}
with open(os.path.join(root, "docker-compose.yml")) as f:
    compose = yaml.safe_load(f)
with open(dev_path) as f:
    dev = [o for o in yaml.safe_load_all(f) if o]

host_ports = {}  # component -> host port


def claim(component, host, container, where):
    if container != components[component]["port"]:
        problems.append(f"{where}: {component} forwards to {container}, it listens on {components[component]['port']}")
    if host in TAKEN_ON_MACOS:
        problems.append(f"{where}: {component} on host port {host}, which macOS's AirPlay Receiver holds")
    if host_ports.setdefault(component, host) != host:
        problems.append(f"{where}: {component} on host port {host}, elsewhere {host_ports[component]}")


for component in components:
    forwards = summary["port_forwards"].get(component, [])
    if not forwards:
        problems.append(f"Tilt: no port forward for {component}")
    for forward in forwards:
        host, _, container = forward.partition(":")
        claim(component, int(host), int(container or host), "Tilt")
    for mapping in compose["services"].get(component, {}).get("ports", []):
        parts = str(mapping).split(":")
        claim(component, int(parts[-2]), int(parts[-1]), "compose")

ui_ports = {}
for ui in UIS:
    tilt = summary["port_forwards"].get(ui, [])
    published = [":".join(str(m).split(":")[-2:]) for m in compose["services"].get(ui, {}).get("ports", [])]
    if not tilt or tilt != published:
        problems.append(f"{ui}: Tilt forwards {tilt}, compose publishes {published}")
    for forward in tilt:
        host = int(forward.partition(":")[0])
        if host in TAKEN_ON_MACOS or host in host_ports.values():
            problems.append(f"{ui}: host port {host} is taken by macOS or a component")
        ui_ports[ui] = host

with open(os.path.join(root, "k8s/kind/cluster.yaml")) as f:
    kind = yaml.safe_load(f)
with open(os.path.join(root, "k8s/kind/ctlptl.yaml")) as f:
    ctlptl = {d["kind"]: d for d in yaml.safe_load_all(f) if d}
# The oldest Kubernetes votemesh's manifests run on (preStop.sleep).
MIN_KUBERNETES = (1, 30)
for node in kind.get("nodes", []):
    image = str(node.get("image", ""))
    match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image)
    if not match:
        problems.append(f"k8s/kind/cluster.yaml: node image {image!r} is not kindest/node:vX.Y.Z@sha256:<digest>: kind's default depends on its release")
    elif (int(match.group(1)), int(match.group(2))) < MIN_KUBERNETES:
        problems.append(f"k8s/kind/cluster.yaml: node image {image} is older than Kubernetes {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]}")
if ctlptl.get("Cluster", {}).get("kindV1Alpha4Cluster") != kind:
    problems.append("k8s/kind/ctlptl.yaml's kindV1Alpha4Cluster differs from k8s/kind/cluster.yaml")
registry_port = ctlptl.get("Registry", {}).get("port")
if registry_port in TAKEN_ON_MACOS:
    problems.append(f"ctlptl registry on host port {registry_port}, which macOS's AirPlay Receiver holds")
node_ports = [
    p.get("nodePort") for o in dev if o["kind"] == "Service" and o["metadata"]["name"] == "gateway" for p in o["spec"]["ports"]
]
mappings = [m for node in kind.get("nodes", []) for m in node.get("extraPortMappings", [])]
kind_ports = {m["hostPort"] for m in mappings}
if not any(m["containerPort"] in node_ports for m in mappings):
    problems.append(f"kind maps {[m['containerPort'] for m in mappings]}, not the dev gateway's NodePort {node_ports}")
for port in kind_ports:
    if port in TAKEN_ON_MACOS or port in host_ports.values():
        problems.append(f"kind publishes host port {port}, taken by macOS or by a port forward")

allowed = set(host_ports.values()) | set(ui_ports.values()) | kind_ports | {TILT_UI}
by_port = {port: component for component, port in host_ports.items()}
doc_sections = []  # (where, body)
for path, titles in DOC_SECTIONS.items():
    with open(os.path.join(root, path)) as f:
        text = f.read()
    sections = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, body = block.partition("\n")
        sections[title.strip()] = body
    for title in titles:
        if title not in sections:
            problems.append(f"{path} has no section {title!r}")
        else:
            doc_sections.append((f"{path} {title!r}", sections[title]))
for where, body in doc_sections:
    for port in re.findall(r"localhost:(\d+)", body):
        if int(port) not in allowed:
            problems.append(f"{where}: localhost:{port} is none of the host ports {sorted(allowed)}")
    for name, host, container in re.findall(r"port-forward svc/(\w+) (\d+):(\d+)", body):
        if name in components:
            claim(name, int(host), int(container), f"{where} port-forward")
    for line in body.splitlines():
        if "grpcurl" not in line or not line.lstrip().startswith("grpcurl"):
            continue
        port = re.search(r"localhost:(\d+)", line)
        method = re.search(r"\s((?:grpc|votemesh)\.[\w.]+)/\w+", line)
        if not port:
            problems.append(f"{where}: grpcurl without localhost:PORT: {line.strip()}")
            continue
        component = by_port.get(int(port.group(1)))
        service = method.group(1) if method else None
        if component is None:
            problems.append(f"{where}: grpcurl to localhost:{port.group(1)}, no component's host port")
        elif service in SERVES and SERVES[service] != component:
            problems.append(f"{where}: {service} called on {component}'s port {port.group(1)}")

for problem in problems:
    print(f"FAIL {problem}")
print(f"host ports {host_ports}; kind {sorted(kind_ports)}; sections {[where for where, _ in doc_sections]}")
sys.exit(1 if problems else 0)
