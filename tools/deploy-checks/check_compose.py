"""Checks docker-compose.yml against the Dockerfile and the binaries.

Usage: check_compose.py REPO_ROOT

The compose file must parse; every service built from the repository must
use a target the Dockerfile has, and its healthcheck must run its own
binary's --health-check; dependencies must wait for health; Postgres and
Redis keep their data in volumes.
"""

import os
import re
import sys

import yaml

root = sys.argv[1]
problems = []

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
for store in ("postgres", "redis"):
    mounts = services.get(store, {}).get("volumes", [])
    if not any(m.split(":")[0] in volumes for m in mounts):
        problems.append(f"{store}: keeps no data in a named volume")

for problem in problems:
    print(f"FAIL {problem}")
print(f"{len(services)} services checked against Dockerfile targets {sorted(stages)}")
sys.exit(1 if problems else 0)
