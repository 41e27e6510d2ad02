"""Validates the CloudNativePG objects of a rendered kustomization against
the operator's CRD schema, offline.

usage: check_cnpg.py RENDERED.yaml BUILTIN_OUT.yaml [DEPLOYING.md]

kubernetes-validate knows no CloudNativePG schemas, so this script writes
every object of a built-in kind to BUILTIN_OUT.yaml (for
kubernetes-validate --strict) and validates each postgresql.cnpg.io
object itself, with jsonschema, against the Cluster schema vendored in
schemas/ (CloudNativePG's own openAPIV3Schema; see its header for the
release). Like the API server's strict field validation
(`kubectl apply --server-side`), a field the schema does not know is an
error: every object schema with properties gets additionalProperties:
false. The CEL rules (x-kubernetes-validations) are not evaluated.

With DEPLOYING.md, the operator release the docs install
(releases/cnpg-X.Y.Z.yaml) must be the schema's.
"""

import os
import re
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "schemas", "cnpg-1.30.0-cluster.yaml")
GROUP = "postgresql.cnpg.io/"
API_VERSION = "postgresql.cnpg.io/v1"

errors = []


def fail(message):
    errors.append(message)


def strict(schema):
    """The schema with unknown fields rejected wherever fields are listed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def release_of(path):
    return re.search(r"cnpg-(\d+\.\d+\.\d+)-cluster\.yaml$", path).group(1)


def main(rendered_path, builtin_out, docs=None):
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    with open(builtin_out, "w") as f:
        yaml.safe_dump_all([o for o in objects if not o["apiVersion"].startswith(GROUP)], f)
    with open(SCHEMA) as f:
        validator = jsonschema.Draft7Validator(strict(yaml.safe_load(f)))
    clusters = [o for o in objects if o["apiVersion"].startswith(GROUP)]
    for o in clusters:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["apiVersion"] != API_VERSION or o["kind"] != "Cluster":
            fail(f"{where}: {o['apiVersion']} {o['kind']}, not a {API_VERSION} Cluster (the only schema vendored)")
            continue
        for error in sorted(validator.iter_errors(o), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            fail(f"{where}: {path}: {error.message}")
    if not clusters:
        fail("no CloudNativePG Cluster rendered")
    if docs:
        with open(docs) as f:
            installed = set(re.findall(r"releases/cnpg-(\d+\.\d+\.\d+)\.yaml", f.read()))
        if installed != {release_of(SCHEMA)}:
            fail(f"{docs} installs CloudNativePG {sorted(installed)}, the vendored schema is {release_of(SCHEMA)}'s")
    for message in errors:
        print(f"FAIL {message}")
    print(f"{len(clusters)} CloudNativePG objects checked against {os.path.basename(SCHEMA)}, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
