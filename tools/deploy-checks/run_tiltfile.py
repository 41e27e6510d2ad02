"""Executes the Tiltfile with stubbed Tilt builtins.

Usage: run_tiltfile.py REPO_ROOT TILTFILE [TILT_ARGS...]

Fails on a Starlark syntax error, a call to a builtin Tilt does not have
(an undefined name), a bad argument name, or a path the Tiltfile names that
does not exist in the repository. The stubs record what would be deployed;
the summary lists the images, resources and port forwards.
"""

import os
import re
import subprocess
import sys

import starlark as sl
import yaml

root = os.path.abspath(sys.argv[1])
tiltfile = sys.argv[2]
tilt_args = sys.argv[3:]
problems = []
recorded = {"images": [], "resources": {}, "local": [], "yaml": 0}
# Paths produced by a build step (or the Tiltfile's own `local` calls)
# rather than kept in the repository.
BUILT_PREFIXES = ("target/", "tilt/bin/")


def path(p, what):
    if not isinstance(p, str):
        problems.append(f"{what}: path {p!r} is not a string")
    elif not p.startswith(BUILT_PREFIXES) and not os.path.exists(os.path.join(root, p)):
        problems.append(f"{what}: {p} does not exist")
    return p


def check_kwargs(name, kwargs, allowed):
    unknown = set(kwargs) - set(allowed)
    if unknown:
        problems.append(f"{name}(): unknown arguments {sorted(unknown)}")


def docker_build(ref, context, **kwargs):
    check_kwargs("docker_build", kwargs, {"dockerfile", "target", "build_args", "only", "ignore", "live_update", "entrypoint", "platform", "network", "ssh", "secret", "extra_tag", "container_args", "cache_from", "pull", "match_in_env_vars"})
    path(context, "docker_build context")
    dockerfile = kwargs.get("dockerfile", os.path.join(context, "Dockerfile"))
    path(dockerfile, "docker_build dockerfile")
    with open(os.path.join(root, dockerfile)) as f:
        arguments = set(re.findall(r"^ARG\s+(\w+)", f.read(), re.MULTILINE))
    for name in kwargs.get("build_args", {}):
        if name not in arguments:
            problems.append(f"docker_build {ref}: build arg {name} is not an ARG of {dockerfile}")
    target = kwargs.get("target")
    if target:
        with open(os.path.join(root, dockerfile)) as f:
            stages = {line.split()[-1].lower() for line in f if line.upper().startswith("FROM ") and " AS " in line.upper()}
        if target not in stages:
            problems.append(f"docker_build {ref}: the Dockerfile has no target {target}")
    for item in kwargs.get("only", []):
        path(item, f"docker_build {ref} only")
    recorded["images"].append(ref)


def docker_build_with_restart(ref, context, entrypoint, **kwargs):
    check_kwargs("docker_build_with_restart", kwargs, {"dockerfile", "build_args", "only", "ignore", "live_update", "target", "trigger", "exit_policy", "restart_file"})
    kwargs.pop("trigger", None), kwargs.pop("exit_policy", None), kwargs.pop("restart_file", None)
    docker_build(ref, context, entrypoint=entrypoint, **kwargs)


def sync(local_path, remote_path):
    return ("sync", path(local_path, "sync"), remote_path)


def run(cmd, trigger=None, echo_off=False):
    return ("run", cmd)


def kustomize(directory, kustomize_bin=None, flags=None):
    path(directory, "kustomize")
    kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
    rendered = subprocess.run([kubectl, "kustomize", os.path.join(root, directory)], capture_output=True, text=True)
    if rendered.returncode != 0:
        problems.append(f"kustomize {directory}: {rendered.stderr}")
    return rendered.stdout


def decode_yaml_stream(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def encode_yaml_stream(objects):
    return yaml.safe_dump_all(objects)


def k8s_yaml(text, allow_duplicates=False):
    docs = decode_yaml_stream(text)
    recorded["yaml"] += len(docs)
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            recorded["resources"].setdefault(doc["metadata"]["name"], {})


def k8s_resource(workload="", **kwargs):
    check_kwargs("k8s_resource", kwargs, {"new_name", "port_forwards", "extra_pod_selectors", "trigger_mode", "resource_deps", "objects", "auto_init", "pod_readiness", "links", "labels", "discovery_strategy"})
    if workload not in recorded["resources"]:
        problems.append(f"k8s_resource({workload!r}): no such workload in the deployed YAML")
        return
    recorded["resources"][workload].update(kwargs)


def local_resource(name, cmd="", **kwargs):
    check_kwargs("local_resource", kwargs, {"deps", "trigger_mode", "resource_deps", "ignore", "auto_init", "serve_cmd", "labels", "links", "env", "dir", "allow_parallel", "readiness_probe"})
    for dep in kwargs.get("deps", []):
        path(dep, f"local_resource {name} deps")
    recorded["local"].append(name)
    recorded["resources"][name] = kwargs


def local(command, quiet=False, echo_off=False, env=None, dir=None):
    if not command.startswith("mkdir -p tilt/bin/"):
        problems.append(f"local({command!r}): only creating tilt/bin/ is expected at load time")
    return ""


def link(url, name=""):
    return (url, name)


def update_settings(**kwargs):
    check_kwargs("update_settings", kwargs, {"max_parallel_updates", "k8s_upsert_timeout_secs", "suppress_unused_image_warnings"})


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
    # Tilt's `config` is a namespace of functions: build it as a struct.
    module.add_callable("_config_define_bool", config.define_bool)
    module.add_callable("_config_parse", config.parse)
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    prelude = "config = struct(define_bool = _config_define_bool, parse = _config_parse)"
    sl.eval(module, sl.parse("prelude", prelude, sl.Dialect.extended()), globals_)
    sl.eval(module, ast, globals_, sl.FileLoader(load_module))

    for name, resource in recorded["resources"].items():
        for dep in resource.get("resource_deps", []):
            if dep not in recorded["resources"]:
                problems.append(f"{name}: depends on unknown resource {dep}")
    for problem in problems:
        print(f"FAIL {problem}")
    forwards = {n: r.get("port_forwards") for n, r in recorded["resources"].items() if r.get("port_forwards")}
    print(f"images {sorted(recorded['images'])}; port forwards {forwards}; {recorded['yaml']} objects")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
