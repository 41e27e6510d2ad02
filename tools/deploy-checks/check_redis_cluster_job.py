"""Runs the Redis Cluster formation Job of a rendered kustomization
(k8s/components/scale-out) offline: its script, from the ConfigMap the Job
mounts, with the Job's own environment, under `sh`, against a fake
redis-cli that plays the six nodes.

usage: check_redis_cluster_job.py RENDERED.yaml

What it holds:
- fresh nodes (one of them slow to answer): one `--cluster create` of
  every node's address with --cluster-replicas REPLICAS, then success;
- the same cluster again (the Job re-run): no second create, success;
- a formed cluster whose nodes came back at new addresses: no create, every
  node introduced to every other at its new address (CLUSTER MEET);
- a node that never answers: failure, no create;
- the Job's NODES are the StatefulSet's pods by their stable names, and
  REPLICAS leaves each primary a replica (6 nodes, 1 replica: 3 primaries);
- shellcheck finds nothing, where it is installed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

FAKE_CLI = r'''#!PYTHON
import json, os, sys
path = os.environ["FAKE_REDIS"]
state = json.load(open(path))
args = sys.argv[1:]
def save():
    json.dump(state, open(path, "w"))
if args[:2] == ["--cluster", "create"]:
    rest = args[2:]
    addresses = [a for a in rest[:rest.index("--cluster-replicas")]]
    state["log"].append(["create"] + rest)
    known = {n["ip"] + ":6379" for n in state["nodes"].values()}
    if set(addresses) != known:
        print("[ERR] Node " + str(sorted(set(addresses) - known)) + " is not reachable", file=sys.stderr)
        save(); sys.exit(1)
    for n in state["nodes"].values():
        n["slots"], n["state"] = 16384, "ok"
    save(); print("[OK] All 16384 slots covered."); sys.exit(0)
host, port, command = args[1], args[3], [a.lower() for a in args[4:]]
node = state["nodes"].get(host)
if node is None or port != "6379" or node["silent"] != 0:
    if node is not None and node["silent"] > 0:
        node["silent"] -= 1
    save()
    print("Could not connect to Redis at " + host + ":" + port, file=sys.stderr)
    sys.exit(1)
state["log"].append([host] + command)
if command == ["ping"]:
    print("PONG")
elif command == ["cluster", "info"]:
    sys.stdout.write("cluster_state:%s\r\ncluster_slots_assigned:%d\r\ncluster_known_nodes:6\r\n" % (node["state"], node["slots"]))
elif command == ["client", "info"]:
    sys.stdout.write("id=7 addr=10.9.9.9:41234 laddr=%s:6379 fd=9 name= age=0 idle=0 flags=N db=0\r\n" % node["ip"])
elif command[:2] == ["cluster", "meet"]:
    # Met again, the node finds the others: the cluster is whole.
    node["state"] = "ok"
    print("OK")
elif command == ["cluster", "nodes"]:
    for name, n in state["nodes"].items():
        print("id-%s %s:6379@16379,%s master - 0 0 1 connected" % (name, n["ip"], name))
else:
    print("ERR unknown command " + " ".join(command), file=sys.stderr); save(); sys.exit(1)
save()
'''

errors = []


def fail(message):
    errors.append(message)


def run(script, env, nodes, fresh=True, silent=None, tries="150"):
    """Runs the script against fake nodes; returns (exit code, output, log)."""
    silent = silent or {}
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = os.path.join(tmp, "bin")
        os.mkdir(bin_dir)
        cli = os.path.join(bin_dir, "redis-cli")
        with open(cli, "w") as f:
            f.write(FAKE_CLI.replace("PYTHON", sys.executable, 1))
        os.chmod(cli, 0o755)
        # No waiting between attempts.
        with open(os.path.join(bin_dir, "sleep"), "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(os.path.join(bin_dir, "sleep"), 0o755)
        state = {
            "nodes": {
                host: {"ip": f"10.0.0.{i + 10 + (0 if fresh else 100)}", "slots": 0 if fresh else 16384,
                       "state": "fail", "silent": silent.get(host, 0)}
                for i, host in enumerate(nodes)
            },
            "log": [],
        }
        state_path = os.path.join(tmp, "state.json")
        with open(state_path, "w") as f:
            json.dump(state, f)
        script_path = os.path.join(tmp, "script.sh")
        with open(script_path, "w") as f:
            f.write(script)
        environment = {**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "FAKE_REDIS": state_path, "TRIES": tries}
        result = subprocess.run(["sh", script_path], env=environment, capture_output=True, text=True, timeout=120)
        with open(state_path) as f:
            final = json.load(f)
        if result.returncode == 0 and fresh:
            # Run again on what the first run left: the Job re-run.
            with open(state_path, "w") as f:
                json.dump({**final, "log": []}, f)
            again = subprocess.run(["sh", script_path], env=environment, capture_output=True, text=True, timeout=120)
            with open(state_path) as f:
                final["rerun"] = (again.returncode, again.stdout + again.stderr, json.load(f)["log"])
        return result.returncode, result.stdout + result.stderr, final


def main(rendered_path):
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    jobs = [o for o in objects if o["kind"] == "Job"]
    statefulsets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    if len(jobs) != 1:
        fail(f"expected one formation Job, found {[j['metadata']['name'] for j in jobs]}")
        return report()
    job = jobs[0]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    script_file = container["command"][-1]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    directory, _, name = script_file.rpartition("/")
    config = volumes.get(mounts.get(directory), {}).get("configMap", {}).get("name")
    script = configmaps.get(config, {}).get("data", {}).get(name)
    if script is None:
        fail(f"job/{job['metadata']['name']}: runs {script_file}, which no mounted ConfigMap holds")
        return report()

    nodes = [n.rpartition(":")[0] for n in env.get("NODES", "").split()]
    redis = statefulsets.get("redis-cluster", {})
    service = redis.get("spec", {}).get("serviceName")
    pods = [f"redis-cluster-{i}.{service}" for i in range(redis.get("spec", {}).get("replicas", 0))]
    if nodes != pods:
        fail(f"job NODES {nodes} are not the StatefulSet's pods {pods}")
    replicas = int(env.get("REPLICAS", "0"))
    if replicas < 1 or len(pods) < 3 * (replicas + 1):
        fail(f"REPLICAS {replicas} with {len(pods)} nodes: Redis Cluster needs 3 primaries, each with a replica")

    code, output, state = run(script, env, nodes, silent={nodes[0]: 2} if nodes else {})
    creates = [entry for entry in state["log"] if entry[0] == "create"]
    addresses = sorted(n["ip"] + ":6379" for n in state["nodes"].values())
    if code != 0:
        fail(f"fresh nodes: the script failed ({code}): {output}")
    elif len(creates) != 1:
        fail(f"fresh nodes: {len(creates)} cluster creates, expected one: {output}")
    else:
        create = creates[0][1:]
        given = sorted(create[: create.index("--cluster-replicas")])
        if given != addresses or create[create.index("--cluster-replicas") + 1] != str(replicas) or "--cluster-yes" not in create:
            fail(f"fresh nodes: creates with {create}, expected every node's address {addresses}, --cluster-replicas {replicas}, --cluster-yes")
    rerun = state.get("rerun")
    if rerun and (rerun[0] != 0 or any(entry[0] == "create" for entry in rerun[2])):
        fail(f"re-run on the formed cluster: exit {rerun[0]}, log {rerun[2]}: it must succeed without creating again")

    code, output, state = run(script, env, nodes, fresh=False)
    meets = {(entry[0], entry[3]) for entry in state["log"] if entry[1:3] == ["cluster", "meet"]}
    by_host = {h: n["ip"] for h, n in state["nodes"].items()}
    wanted = {(a, by_host[b]) for a in nodes for b in nodes if a != b}
    if code != 0 or any(entry[0] == "create" for entry in state["log"]):
        fail(f"formed cluster at new addresses: exit {code}, creates again or fails: {output}")
    elif meets != wanted:
        fail(f"formed cluster at new addresses: CLUSTER MEET {sorted(meets)}, expected every node to meet every other: {sorted(wanted - meets)} missing")

    if nodes:
        code, output, state = run(script, env, nodes, silent={nodes[-1]: 10**6}, tries="5")
        if code == 0 or any(entry[0] == "create" for entry in state["log"]):
            fail(f"a node that never answers: exit {code}; the script must fail without creating: {output}")

    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
            f.write(script)
            f.flush()
            result = subprocess.run([shellcheck, "-s", "sh", f.name], capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"shellcheck: {result.stdout}")
    else:
        print("shellcheck not installed: skipped")
    return report()


def report():
    for message in errors:
        print(f"FAIL {message}")
    print(f"redis cluster formation Job: {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
