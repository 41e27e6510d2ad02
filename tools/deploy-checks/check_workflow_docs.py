"""Checks that a CI workflow runs only commands a doc tells users to run.

Usage: check_workflow_docs.py WORKFLOW.yml DOC.md

Every line of every `run:` of WORKFLOW (blank lines and comments aside)
must be, as written, a line of a ```sh block of DOC, so what CI proves on a
real cluster is what a user following the doc does. Every `uses:` must be
an action of ALLOWED_ACTIONS (checkout and artifact upload: nothing that
sets the cluster up behind the doc's back). Prints each line missing from
the doc and exits 1 if there is any.
"""

import re
import sys

import yaml

ALLOWED_ACTIONS = ("actions/checkout@", "actions/upload-artifact@")


def main(workflow_path, doc_path):
    with open(workflow_path) as f:
        workflow = yaml.safe_load(f)
    with open(doc_path) as f:
        doc = f.read()
    documented = {
        line.strip()
        for block in re.findall(r"^```sh\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
        for line in block.splitlines()
    }
    problems, count = [], 0
    for job_name, job in workflow.get("jobs", {}).items():
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith(ALLOWED_ACTIONS):
                problems.append(f"{job_name}: step uses {uses}, which no doc command stands for")
            for line in str(step.get("run", "")).splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                count += 1
                if line not in documented:
                    problems.append(f"{job_name}: {line!r} is not a command of {doc_path}")
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{count} workflow commands checked against {doc_path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
