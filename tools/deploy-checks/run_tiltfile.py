"""Executes the Tiltfile with stubbed Tilt builtins.

Usage: run_tiltfile.py REPO_ROOT TILTFILE SUMMARY_JSON [TILT_ARGS...]

The stubs have the parameters of Tilt's own builtins (as declared in Tilt's
internal/tiltfile/api/__init__.py, and the restart_process extension's
Tiltfile), so a misspelt or unknown argument fails as it would in Tilt. A
path the Tiltfile names must exist in the repository (or be made by a build
step). After the run, the Kubernetes objects are grouped into resources by
Tilt's rules (internal/tiltfile/tiltfile_state.go, assembleK8s): each
workload (an object with a pod template) is a resource with the Services
whose selector matches its pods; `k8s_resource(objects=[...])` attaches
others by selector fragment ("name", "name:kind", "name:kind:namespace"),
each of which must match exactly one object not yet in a resource. What is
left would be Tilt's "uncategorized" resource, and fails here.

Fails on a Starlark syntax error, a call to a builtin Tilt does not have
(an undefined name), a bad argument, a missing path, an unknown resource or
dependency, or an uncategorized object. Writes a summary (images and their
build inputs, resources, port forwards, links, kustomize directories) to
SUMMARY_JSON and prints it.
"""

import json
import os
import re
import subprocess
import sys

import starlark as sl
import yaml

root = os.path.abspath(sys.argv[1])
tiltfile = sys.argv[2]
summary_path = sys.argv[3]
tilt_args = sys.argv[4:]
problems = []
objects = []  # every Kubernetes object given to k8s_yaml
images = {}  # ref -> {"context", "dockerfile", "target", "only", "live_update"}
local_resources = {}  # name -> options
k8s_options = []  # each k8s_resource call's arguments
kustomized = []
# Paths produced by a build step (or the Tiltfile's own `local` calls)
# rather than kept in the repository.
BUILT_PREFIXES = ("target/", "tilt/bin/")
TRIGGER_MODE_AUTO = 1
TRIGGER_MODE_MANUAL = 2


def path(p, what):
    if not isinstance(p, str):
        problems.append(f"{what}: path {p!r} is not a string")
    elif not p.startswith(BUILT_PREFIXES) and not os.path.exists(os.path.join(root, p)):
        problems.append(f"{what}: {p} does not exist")
    return p


def as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, (str, int)) else list(value)


def dockerfile_stages(dockerfile):
    with open(os.path.join(root, dockerfile)) as f:
        text = f.read()
    stages = set(re.findall(r"^FROM\s+.*\s+AS\s+(\S+)\s*$", text, re.MULTILINE | re.IGNORECASE))
    arguments = set(re.findall(r"^ARG\s+(\w+)", text, re.MULTILINE))
    return {s.lower() for s in stages}, arguments


# Tilt's docker_build (api/__init__.py).
def docker_build(ref, context, build_args={}, dockerfile="Dockerfile", dockerfile_contents="",
                 live_update=[], match_in_env_vars=False, ignore=[], only=[], entrypoint=[],
                 target="", ssh="", network="", secret="", extra_tag="", container_args=None,
                 cache_from=[], pull=False, platform="", extra_hosts=[]):
    path(context, f"docker_build {ref} context")
    if dockerfile_contents:
        problems.append(f"docker_build {ref}: dockerfile_contents is not expected here")
    path(dockerfile, f"docker_build {ref} dockerfile")
    if os.path.isfile(os.path.join(root, dockerfile)):
        stages, arguments = dockerfile_stages(dockerfile)
        for name in build_args:
            if name not in arguments:
                problems.append(f"docker_build {ref}: build arg {name} is not an ARG of {dockerfile}")
        if target and target not in stages:
            problems.append(f"docker_build {ref}: {dockerfile} has no target {target}")
    for item in as_list(only):
        path(os.path.normpath(os.path.join(context, item)), f"docker_build {ref} only")
    for step in live_update:
        if step[0] == "sync" and not step[1].startswith(context.rstrip("/") + "/"):
            problems.append(f"docker_build {ref}: syncs {step[1]}, outside its context {context}")
    if ref in images:
        problems.append(f"docker_build {ref}: built twice")
    images[ref] = {
        "context": context, "dockerfile": dockerfile, "target": target,
        "only": as_list(only), "live_update": [list(step) for step in live_update],
    }


# The restart_process extension's docker_build_with_restart: the image is
# built as docker_build does, with the entrypoint wrapped so that the last
# live-update step restarts the process.
def docker_build_with_restart(ref, context, entrypoint, live_update,
                              base_suffix="-tilt_docker_build_with_restart_base",
                              restart_file="/tmp/.restart-proc", trigger=None, exit_policy="restart", **kwargs):
    if not live_update:
        problems.append(f"docker_build_with_restart {ref}: needs at least one live_update step")
    if exit_policy not in ("restart", "continue"):
        problems.append(f"docker_build_with_restart {ref}: exit_policy {exit_policy!r}")
    docker_build(ref, context, live_update=live_update, entrypoint=entrypoint, **kwargs)


def sync(local_path, remote_path):
    if not remote_path.startswith("/"):
        problems.append(f"sync: remote path {remote_path} is not absolute")
    return ("sync", path(local_path, "sync"), remote_path)


def run(cmd, trigger=[], echo_off=False):
    return ("run", cmd)


def kustomize(pathToDir, kustomize_bin=None, flags=[]):
    path(pathToDir, "kustomize")
    kustomized.append(pathToDir)
    kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
    rendered = subprocess.run([kubectl, "kustomize", os.path.join(root, pathToDir)], capture_output=True, text=True)
    if rendered.returncode != 0:
        problems.append(f"kustomize {pathToDir}: {rendered.stderr}")
    return rendered.stdout


def decode_yaml_stream(yaml_text):
    return [doc for doc in yaml.safe_load_all(yaml_text) if doc]


def encode_yaml_stream(objs):
    return yaml.safe_dump_all(objs)


def k8s_yaml(yaml_text, allow_duplicates=False):
    for doc in decode_yaml_stream(yaml_text):
        objects.append(doc)


def k8s_resource(workload="", new_name="", port_forwards=[], extra_pod_selectors=[],
                 trigger_mode=TRIGGER_MODE_AUTO, resource_deps=[], objects=[], auto_init=True,
                 pod_readiness="", links=[], labels=[], discovery_strategy=""):
    k8s_options.append({
        "workload": workload, "new_name": new_name, "port_forwards": as_list(port_forwards),
        "resource_deps": list(resource_deps), "objects": list(objects), "links": as_list(links),
        "labels": as_list(labels),
    })


def local_resource(name, cmd, deps=None, trigger_mode=TRIGGER_MODE_AUTO, resource_deps=[], ignore=[],
                   auto_init=True, serve_cmd="", cmd_bat="", serve_cmd_bat="", allow_parallel=False,
                   links=[], labels=[], env={}, serve_env={}, readiness_probe=None, dir="", serve_dir=""):
    for dep in as_list(deps):
        path(dep, f"local_resource {name} deps")
    if name in local_resources:
        problems.append(f"local_resource {name}: defined twice")
    local_resources[name] = {
        "cmd": cmd, "deps": as_list(deps), "resource_deps": list(resource_deps),
        "labels": as_list(labels), "manual": trigger_mode == TRIGGER_MODE_MANUAL, "auto_init": auto_init,
    }


def local(command, quiet=False, command_bat="", echo_off=False, env={}, dir="", stdin=None):
    if not command.startswith("mkdir -p tilt/bin/"):
        problems.append(f"local({command!r}): only creating tilt/bin/ is expected at load time")
    return ""


def link(url, name=None):
    return {"url": url, "name": name}


def update_settings(max_parallel_updates=3, k8s_upsert_timeout_secs=30,
                    suppress_unused_image_warnings=None, k8s_server_side_apply="auto"):
    pass


class Config:
    def __init__(self):
        self.flags = {}

    def define_bool(self, name, args=False, usage=""):
        self.flags[name] = False

    def parse(self):
        values = dict(self.flags)
        for arg in tilt_args:
            name = arg.lstrip("-")
            if name not in self.flags:
                problems.append(f"config: unknown flag {arg}")
            values[name] = True
        return values


def load_module(name):
    if name != "ext://restart_process":
        problems.append(f"load({name!r}): unknown extension")
    module = sl.Module()
    module.add_callable("docker_build_with_restart", docker_build_with_restart)
    return module.freeze()


# --- Tilt's assembly of Kubernetes objects into resources -----------------

def has_pod_template(obj):
    return obj["kind"] == "Pod" or "template" in obj.get("spec", {}) or "jobTemplate" in obj.get("spec", {})


def pod_labels(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if "jobTemplate" in spec:
        return spec["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return spec["template"].get("metadata", {}).get("labels", {})


def fragments(obj):
    """Tilt's potentialNames: name, name:kind, name:kind:namespace, ...:group."""
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else "core"
    parts = [obj["metadata"]["name"], obj["kind"], obj["metadata"].get("namespace") or "default", group]
    return [":".join(parts[: i + 1]).lower() for i in range(len(parts))]


def assemble():
    resources = {}  # name -> list of objects
    unresourced = list(objects)
    for workload in [o for o in objects if has_pod_template(o)]:
        name = workload["metadata"]["name"]
        if name in resources:
            problems.append(f"two workloads are named {name}")
        unresourced.remove(workload)
        labels = pod_labels(workload)
        namespace = workload["metadata"].get("namespace", "default")
        matched = [
            o for o in unresourced
            if o["kind"] == "Service"
            and o["spec"].get("selector")
            and all(labels.get(k) == v for k, v in o["spec"]["selector"].items())
            and o["metadata"].get("namespace", "default") in ("default", namespace)
        ]
        for o in matched:
            unresourced.remove(o)
        resources[name] = [workload] + matched

    table = {}
    for o in objects:
        for fragment in fragments(o):
            table.setdefault(fragment, []).append(o)
    for options in k8s_options:
        name = options["new_name"] or options["workload"]
        if options["workload"]:
            if options["workload"] not in resources:
                problems.append(f"k8s_resource({options['workload']!r}): no such workload in the deployed YAML ({sorted(resources)})")
                continue
        elif options["new_name"] and options["objects"]:
            resources.setdefault(name, [])
        else:
            problems.append("k8s_resource(): needs a workload, or new_name with objects")
            continue
        for fragment in options["objects"]:
            found = table.get(fragment.lower(), [])
            if len(found) != 1:
                problems.append(f"k8s_resource {name}: objects fragment {fragment!r} matches {len(found)} objects")
            elif found[0] not in unresourced:
                problems.append(f"k8s_resource {name}: {fragment!r} already belongs to a resource")
            else:
                unresourced.remove(found[0])
                resources[name].append(found[0])
        if not resources[name]:
            problems.append(f"resource {name}: could not associate any k8s_yaml() with this resource")
    for o in unresourced:
        problems.append(f"uncategorized: {o['kind']} {o['metadata']['name']} belongs to no resource")
    return resources


def main():
    with open(tiltfile) as f:
        source = f.read()
    ast = sl.parse("Tiltfile", source, sl.Dialect.extended())
    module = sl.Module()
    config = Config()
    for name, fn in {
        "docker_build": docker_build, "sync": sync, "run": run, "kustomize": kustomize,
        "decode_yaml_stream": decode_yaml_stream, "encode_yaml_stream": encode_yaml_stream,
        "k8s_yaml": k8s_yaml, "k8s_resource": k8s_resource, "local_resource": local_resource,
        "link": link, "update_settings": update_settings, "local": local,
    }.items():
        module.add_callable(name, fn)
    module["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
    module["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL
    # Tilt's `config` is a namespace of functions: build it as a struct.
    module.add_callable("_config_define_bool", config.define_bool)
    module.add_callable("_config_parse", config.parse)
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    prelude = "config = struct(define_bool = _config_define_bool, parse = _config_parse)"
    sl.eval(module, sl.parse("prelude", prelude, sl.Dialect.extended()), globals_)
    sl.eval(module, ast, globals_, sl.FileLoader(load_module))

    resources = assemble()
    all_names = set(resources) | set(local_resources)
    labels, deps, forwards, links = {}, {}, {}, {}
    for options in k8s_options:
        name = options["new_name"] or options["workload"]
        labels.setdefault(name, []).extend(options["labels"])
        deps.setdefault(name, []).extend(options["resource_deps"])
        forwards.setdefault(name, []).extend(str(p) for p in options["port_forwards"])
        links.setdefault(name, []).extend(options["links"])
    for name, options in local_resources.items():
        labels.setdefault(name, []).extend(options["labels"])
        deps.setdefault(name, []).extend(options["resource_deps"])
    for name in sorted(all_names):
        if not labels.get(name):
            problems.append(f"resource {name}: no label (it would show as unlabelled in Tilt's UI)")
        for dep in deps.get(name, []):
            if dep not in all_names:
                problems.append(f"{name}: depends on unknown resource {dep}")
    for name, spec in forwards.items():
        for forward in spec:
            if not re.fullmatch(r"\d+(:\d+)?", forward):
                problems.append(f"{name}: port forward {forward!r} is not HOST[:CONTAINER]")
    for ref in images:
        if not any(ref == c["image"].split(":")[0] for o in objects if has_pod_template(o)
                   for c in o["spec"]["template"]["spec"].get("containers", [])):
            problems.append(f"image {ref}: no deployed container uses it")

    summary = {
        "images": images,
        "kustomize": kustomized,
        "resources": {n: sorted(o["kind"] + "/" + o["metadata"]["name"] for o in objs) for n, objs in resources.items()},
        "local_resources": local_resources,
        "labels": labels,
        "port_forwards": {n: f for n, f in forwards.items() if f},
        "links": {n: l for n, l in links.items() if l},
        "problems": problems,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"images {sorted(images)}; kustomize {kustomized}; port forwards {summary['port_forwards']}; "
          f"{len(objects)} objects in {len(resources)} resources; local resources {sorted(local_resources)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
