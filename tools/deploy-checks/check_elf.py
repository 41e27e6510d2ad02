"""Checks that binaries built as `tilt up` builds them run in the image Tilt
syncs them into.

Usage: check_elf.py REPO_ROOT BINARY...

tilt/Dockerfile.build compiles the binaries in a Rust image on one Debian
release; tilt/Dockerfile.dev runs them on distroless cc-debianNN. The
binaries link dynamically against glibc, so:
- the two Dockerfiles must name the same Debian release;
- the BINARYs, built on this machine by the same cargo command, stand for
  the container's build only if this machine runs that release too (CI does);
- each BINARY may need only libraries the distroless cc image has (glibc's,
  libgcc_s, libstdc++), no glibc symbol version newer than that release's
  glibc, and the standard dynamic loader;
- and each one runs here (`--help`), on that same glibc.
"""

import os
import re
import subprocess
import sys

root = sys.argv[1]
binaries = sys.argv[2:]
problems = []
CODENAMES = {"debian11": "bullseye", "debian12": "bookworm", "debian13": "trixie"}
GLIBC = {"bullseye": (2, 31), "bookworm": (2, 36), "trixie": (2, 41)}
# What gcr.io/distroless/cc-debianNN holds besides glibc.
ALLOWED = re.compile(r"(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so\.\d+|ld-linux-(x86-64|aarch64)\.so\.\d")
LOADERS = {"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"}


def from_line(dockerfile):
    with open(os.path.join(root, dockerfile)) as f:
        text = f.read()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    image = re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.MULTILINE)[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)


build_image = from_line("tilt/Dockerfile.build")
run_image = from_line("tilt/Dockerfile.dev")
build_release = build_image.rsplit("-", 1)[-1]
run_match = re.search(r"distroless/cc-(debian\d+)", run_image)
run_release = CODENAMES.get(run_match.group(1)) if run_match else None
if build_release not in GLIBC:
    problems.append(f"tilt/Dockerfile.build builds on {build_image}: not a known Debian release")
if run_release != build_release:
    problems.append(f"tilt/Dockerfile.build builds on {build_image} ({build_release}) but tilt/Dockerfile.dev runs on {run_image} ({run_release})")
glibc = GLIBC.get(run_release, (0, 0))

with open("/etc/os-release") as f:
    host = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
host_release = host.get("VERSION_CODENAME", "").strip('"')
if host_release != build_release:
    problems.append(
        f"this machine runs {host_release or 'an unknown release'}, the dev build runs on {build_release}: "
        "a binary built here does not stand for it; run this check on Debian " + build_release
    )

for binary in binaries:
    name = os.path.basename(binary)
    dynamic = subprocess.run(["readelf", "-W", "-d", binary], capture_output=True, text=True, check=True).stdout
    for library in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
        if not ALLOWED.fullmatch(library):
            problems.append(f"{name}: needs {library}, which distroless cc does not have")
    headers = subprocess.run(["readelf", "-W", "-l", binary], capture_output=True, text=True, check=True).stdout
    loader = re.search(r"Requesting program interpreter: ([^\]]+)\]", headers)
    if loader and loader.group(1) not in LOADERS:
        problems.append(f"{name}: asks for the loader {loader.group(1)}")
    versions = subprocess.run(["readelf", "-W", "-V", binary], capture_output=True, text=True, check=True).stdout
    needed = {tuple(int(n) for n in v.split(".")) for v in re.findall(r"Name: GLIBC_(\d+\.\d+(?:\.\d+)?)", versions)}
    newest = max(needed, default=(0, 0))
    if newest > glibc:
        problems.append(f"{name}: needs GLIBC_{'.'.join(map(str, newest))}, {run_image} has {'.'.join(map(str, glibc))}")
    ran = subprocess.run([binary, "--help"], capture_output=True, text=True)
    if ran.returncode != 0:
        problems.append(f"{name} --help failed here: {ran.stderr.strip()[:300]}")
    print(f"{name}: glibc {'.'.join(map(str, newest))} at most, loader {loader.group(1) if loader else 'none (static)'}")

for problem in problems:
    print(f"FAIL {problem}")
print(f"{len(binaries)} binaries from {build_image} checked for {run_image}")
sys.exit(1 if problems else 0)
