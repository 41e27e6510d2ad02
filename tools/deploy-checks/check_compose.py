"""Checks docker-compose.yml against the Dockerfile and the binaries.

Usage: check_compose.py REPO_ROOT DRAIN_SECONDS [COMPONENTS_JSON]

The compose file must parse; every service built from the repository must
use a target the Dockerfile has, and its healthcheck must run its own
binary's --health-check; dependencies must wait for health; Postgres and
Redis keep their data in volumes. The vote bot (built, but serving
nothing) runs only in the `bot` profile, from the `loadgen` target, with
its health check disabled and no port. Each service built here gets longer than
the binaries' drain (DRAIN_SECONDS, votemesh::shutdown::DRAIN_TIMEOUT) to
stop before compose kills it. Networks as in the original app: Redis and
Postgres only on `back`, the gateway only on `front`. No port is published
on a host port that macOS takes (AirPlay Receiver: 5000, 7000). With
COMPONENTS_JSON (check_manifests.py's: each component's port and the
variable that sets its listen address), each component's listen address is
set to every interface on its port, which is the port it publishes.

The `observability` profile: the collector, Jaeger, Prometheus and Grafana
only in that profile, each image pinned to a version, every file they mount
from the repository present; no service outside the profile depends on
one inside it (compose refuses to start it without the profile); every
service built here takes OTEL_EXPORTER_OTLP_ENDPOINT from our own
VOTEMESH_OTLP_ENDPOINT (empty by default; compose itself reads the standard
name for its own traces) and shares a network with the collector; every
file bind-mounted from the checkout carries the SELinux `z` option; Prometheus
scrapes every service built here on the port it listens on, from a network
it shares with it; Grafana is given the data source and the dashboard.
"""

import json
import os
import re
import sys

import yaml

root = sys.argv[1]
drain_seconds = float(sys.argv[2])
components = {}
if len(sys.argv) > 3:
    with open(sys.argv[3]) as f:
        components = {n: c for n, c in json.load(f).items() if not c.get("client")}
problems = []
# Host ports a stock macOS holds (AirPlay Receiver).
TAKEN_ON_MACOS = {5000, 7000}
NETWORKS = {"redis": {"back"}, "postgres": {"back"}, "gateway": {"front"}, "vote-bot": {"front"}}
# Built services that serve nothing (the vote bot: votemesh-loadgen), so
# have no --health-check; each only in its own profile, health check off.
CLIENTS_ONLY = {"vote-bot": ("loadgen", "bot")}


def seconds(duration):
    """A compose duration such as 20s, 1m30s or 1500ms, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        problems.append(f"unreadable duration {duration!r}")
        return 0
    return sum(float(n) * units[u] for n, u in parts)

with open(os.path.join(root, "Dockerfile")) as f:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", f.read(), re.MULTILINE | re.IGNORECASE))
with open(os.path.join(root, "docker-compose.yml")) as f:
    compose = yaml.safe_load(f)

services = compose.get("services", {})
volumes = set(compose.get("volumes", {}))
for name, service in services.items():
    build = service.get("build")
    if build is not None:
        target = build.get("target") if isinstance(build, dict) else None
        if target not in stages:
            problems.append(f"{name}: builds target {target!r}, which the Dockerfile does not have ({sorted(stages)})")
        if name in CLIENTS_ONLY:
            wanted_target, profile = CLIENTS_ONLY[name]
            if target != wanted_target:
                problems.append(f"{name}: builds target {target!r}, not {wanted_target!r}")
            if service.get("profiles") != [profile]:
                problems.append(f"{name}: profiles {service.get('profiles')}, expected only [{profile!r}]")
            if service.get("healthcheck") != {"disable": True}:
                problems.append(f"{name}: serves nothing, so its healthcheck must be disabled, not {service.get('healthcheck')}")
            if service.get("ports"):
                problems.append(f"{name}: serves nothing, yet publishes {service.get('ports')}")
        else:
            test = service.get("healthcheck", {}).get("test", [])
            expected = ["CMD", f"/usr/local/bin/votemesh-{target}", "--health-check"]
            if test != expected:
                problems.append(f"{name}: healthcheck {test} is not {expected}")
    elif "healthcheck" not in service:
        problems.append(f"{name}: no healthcheck")
    for dependency, condition in (service.get("depends_on") or {}).items():
        if dependency not in services:
            problems.append(f"{name}: depends on unknown service {dependency}")
        if condition.get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for {dependency} to be healthy")
declared = set(compose.get("networks") or {})
for name, service in services.items():
    networks = service.get("networks") or []
    networks = set(networks if isinstance(networks, list) else networks.keys())
    if not networks or not networks <= declared:
        problems.append(f"{name}: networks {sorted(networks)} are not among the declared {sorted(declared)}")
    if name in NETWORKS and networks != NETWORKS[name]:
        problems.append(f"{name}: on networks {sorted(networks)}, expected only {sorted(NETWORKS[name])}")
    if service.get("build") is not None:
        grace = seconds(service.get("stop_grace_period", "10s"))
        if grace <= drain_seconds:
            problems.append(f"{name}: stop_grace_period {grace:g} s is not longer than the {drain_seconds:g} s drain")
    for mapping in service.get("ports", []):
        parts = str(mapping).split(":")
        host = int(parts[-2]) if len(parts) >= 2 else None
        if host is None:
            problems.append(f"{name}: port {mapping} publishes on a random host port")
        elif host in TAKEN_ON_MACOS:
            problems.append(f"{name}: host port {host} is taken on macOS (AirPlay Receiver)")
PROFILE = "observability"
STACK = ("otel-collector", "jaeger", "prometheus", "grafana")


def nets(service):
    networks = service.get("networks") or []
    return set(networks if isinstance(networks, list) else networks.keys())


def mounts(service):
    """(host path, container path) of each bind mount."""
    found = []
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if parts[0].startswith("./"):
            found.append((parts[0], parts[1]))
    return found


for name in STACK:
    service = services.get(name)
    if service is None:
        problems.append(f"observability profile: no service {name}")
        continue
    if service.get("profiles") != [PROFILE]:
        problems.append(f"{name}: profiles {service.get('profiles')}, expected only [{PROFILE!r}]")
    image = service.get("image", "")
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    if not tag or tag == "latest":
        problems.append(f"{name}: image {image!r} is not pinned to a version")
for name, service in services.items():
    for source, _ in mounts(service):
        if not os.path.isfile(os.path.join(root, source)):
            problems.append(f"{name}: mounts {source}, which does not exist")
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        options = set(parts[2].split(",")) if len(parts) > 2 else set()
        if parts[0].startswith("./") and not options & {"z", "Z"}:
            problems.append(f"{name}: bind mount {volume} has no SELinux label option (z): SELinux-enforcing hosts deny it")
    if PROFILE not in (service.get("profiles") or []):
        for dependency in service.get("depends_on") or {}:
            if PROFILE in (services.get(dependency, {}).get("profiles") or []):
                problems.append(f"{name}: depends on {dependency}, which only the {PROFILE} profile starts")
built = {name: s for name, s in services.items() if s.get("build") is not None}
collector = nets(services.get("otel-collector", {}))
prometheus = services.get("prometheus", {})
targets = set()
for source, target in mounts(prometheus):
    if target == "/etc/prometheus/prometheus.yml" and os.path.isfile(os.path.join(root, source)):
        with open(os.path.join(root, source)) as f:
            scrape = yaml.safe_load(f) or {}
        for job in scrape.get("scrape_configs", []):
            for static in job.get("static_configs", []):
                targets.update((job["job_name"], t) for t in static.get("targets", []))
for name, service in built.items():
    environment = service.get("environment") or {}
    if str(environment.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")) != "${VOTEMESH_OTLP_ENDPOINT:-}":
        problems.append(
            f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT is not taken from VOTEMESH_OTLP_ENDPOINT (${{VOTEMESH_OTLP_ENDPOINT:-}}):"
            f" {environment.get('OTEL_EXPORTER_OTLP_ENDPOINT')!r}"
        )
    if name in components:
        spec = components[name]
        listen = str(environment.get(spec["listen_env"]))
        if listen not in (f"0.0.0.0:{spec['port']}", f"[::]:{spec['port']}"):
            problems.append(f"{name}: {spec['listen_env']} is {listen!r}, not every interface on its port {spec['port']}")
    if not nets(service) & collector:
        problems.append(f"{name}: shares no network with otel-collector")
    listens = [int(str(m).split(":")[-1]) for m in service.get("ports", [])]
    if name in components:
        # Where its metrics are: the admin port where it has one.
        listens = [components[name].get("admin_port", components[name]["port"])]
        if "admin_port" in components[name]:
            admin = str(environment.get(components[name]["admin_env"]))
            if admin not in (f"0.0.0.0:{components[name]['admin_port']}", f"[::]:{components[name]['admin_port']}"):
                problems.append(f"{name}: {components[name]['admin_env']} is {admin!r}, not every interface on its admin port")
            if any(str(m).split(":")[-1] == str(components[name]["admin_port"]) for m in service.get("ports", [])):
                problems.append(f"{name}: publishes its admin port on the host")
    for port in listens:
        if (name, f"{name}:{port}") not in targets:
            problems.append(f"prometheus: does not scrape {name}:{port} as job {name} ({sorted(targets)})")
    if not nets(service) & nets(prometheus):
        problems.append(f"prometheus: shares no network with {name}")
grafana_mounts = {target for _, target in mounts(services.get("grafana", {}))}
for needed in ("/etc/grafana/provisioning/datasources/", "/etc/grafana/provisioning/dashboards/", "/var/lib/votemesh/dashboards/"):
    if not any(t.startswith(needed) for t in grafana_mounts):
        problems.append(f"grafana: nothing mounted in {needed}")

for store in ("postgres", "redis"):
    mounts = services.get(store, {}).get("volumes", [])
    if not any(m.split(":")[0] in volumes for m in mounts):
        problems.append(f"{store}: keeps no data in a named volume")

for problem in problems:
    print(f"FAIL {problem}")
print(f"{len(services)} services checked against Dockerfile targets {sorted(stages)}")
sys.exit(1 if problems else 0)
