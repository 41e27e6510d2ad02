"""Checks what the Docker build context of the Rust images holds.

Usage: check_context.py REPO_ROOT DOCKERIGNORE [ONLY...]

The context is the repository's tracked files that DOCKERIGNORE (the
repository's .dockerignore, or a variant under test) lets
through (matched by docker-py's implementation of Docker's rules), narrowed
to ONLY when given (Tilt's `only=`). It must hold everything cargo needs to
build the binaries: the root manifest and lock file, every workspace
member's manifest, build.rs, proto/, and each crate's sources, assets and
declared benches. It must hold nothing else: an edit to the README, k8s/,
tilt/, the Tiltfile, compose, the checks' scripts or any test must not
rebuild an image (the Dockerfiles themselves aside, which Docker always
reads).
"""

import os
import subprocess
import sys
import tomllib

from docker.utils.build import exclude_paths

root = sys.argv[1]
dockerignore = sys.argv[2]
only = sys.argv[3:]
problems = []

tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split())
# git ls-files may list files deleted in the work tree.
tracked = {f for f in tracked if os.path.isfile(os.path.join(root, f))}
with open(dockerignore) as f:
    patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
context = set(exclude_paths(root, patterns)) & tracked
if only:
    context = {f for f in context if any(f == o or f.startswith(o.rstrip("/") + "/") for o in only)}
context -= {"Dockerfile", ".dockerignore"}

with open(os.path.join(root, "Cargo.toml"), "rb") as f:
    members = tomllib.load(f)["workspace"]["members"]


def needed(path):
    """Whether cargo needs this tracked file to build the binaries."""
    if path in ("Cargo.toml", "Cargo.lock", "build.rs"):
        return True
    if "/tests/" in f"/{path}" or path.startswith("tests/"):
        return False
    if path.startswith("proto/"):
        return True
    # The innermost member first: testing/services/ is a member of its own
    # inside testing/.
    for member in sorted(members, key=len, reverse=True):
        prefix = "" if member == "." else member.rstrip("/") + "/"
        if member == "." and path.startswith("src/"):
            return True
        if member != "." and path.startswith(prefix):
            rest = path[len(prefix):]
            return rest == "Cargo.toml" or rest.split("/")[0] in ("src", "benches", "assets", "build.rs")
    return False


expected = {f for f in tracked if needed(f)}
for member in members:
    manifest = "Cargo.toml" if member == "." else f"{member.rstrip('/')}/Cargo.toml"
    if manifest not in context:
        problems.append(f"workspace member {member}: {manifest} is not in the build context (cargo cannot load the workspace)")
for missing in sorted(expected - context):
    problems.append(f"missing from the build context: {missing}")
for extra in sorted(context - expected):
    problems.append(f"in the build context, so editing it rebuilds the images: {extra}")

for problem in problems:
    print(f"FAIL {problem}")
print(f"build context{' (only ' + ' '.join(only) + ')' if only else ''}: {len(context)} files, {len(expected)} needed")
sys.exit(1 if problems else 0)
