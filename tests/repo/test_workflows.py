"""The GitHub workflows: valid against GitHub's schema, the jobs and steps a review relies on, and every
command they run exists here (make targets, `fleet` subcommands and flags, the policy pack directory).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.cli import parser
from fleet.program import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
# Sample values for the expressions the run lines use.
EXPRESSIONS = {"matrix.stack": "prod", "github.base_ref": "main"}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def step_using(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    return next(s for s in steps(workflow, job) if s.get("uses", "").startswith(action + "@"))


def uses(workflow: dict[str, Any], job: str) -> set[str]:
    """The actions a job runs, without their refs."""
    return {s["uses"].split("@")[0] for s in steps(workflow, job) if "uses" in s}


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [line for job in workflow["jobs"].values() for s in job["steps"] for line in s.get("run", "").splitlines()
            if line.strip()]


def expand(line: str) -> str:
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: EXPRESSIONS[m.group(1)], line)


def test_workflows_validate_against_the_github_workflow_schema():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    done = subprocess.run([Path(sys.executable).with_name("check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pull_request_workflow_tests_diffs_checks_policy_and_previews():
    pr = load("pr.yml")
    assert list(pr["on"]) == ["pull_request"]
    assert pr["permissions"] == {"contents": "read"}
    assert "make test" in run_lines({"jobs": {"test": pr["jobs"]["test"]}})
    assert step_using(pr, "test", "actions/setup-python")["with"]["python-version"] == "3.11"
    preview = pr["jobs"]["preview"]
    assert preview["needs"] == "test" and preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert step_using(pr, "preview", "actions/checkout")["with"]["fetch-depth"] == 0  # origin/<base> must exist
    names = [s.get("run", s.get("uses", "")) for s in steps(pr, "preview")]
    diff = next(i for i, n in enumerate(names) if "fleet diff" in n)
    comment = next(i for i, n in enumerate(names) if n.startswith("marocchino/sticky-pull-request-comment@"))
    policy = next(i for i, n in enumerate(names) if "fleet policy" in n)
    auth = next(i for i, n in enumerate(names) if n.startswith("google-github-actions/auth@"))
    pulumi = next(i for i, n in enumerate(names) if n.startswith("pulumi/actions@"))
    assert diff < comment < policy < auth < pulumi
    assert "--against origin/${{ github.base_ref }}" in names[diff] and "--markdown" in names[diff]
    assert steps(pr, "preview")[comment]["with"]["path"] in names[diff]  # the comment posts the diff's output
    with_auth = steps(pr, "preview")[auth]["with"]
    assert with_auth["workload_identity_provider"].startswith("${{ vars.")
    assert with_auth["service_account"].startswith("${{ vars.")
    assert steps(pr, "preview")[pulumi]["uses"].startswith("pulumi/actions@")
    assert steps(pr, "preview")[pulumi]["with"]["command"] == "preview"
    assert steps(pr, "preview")[pulumi]["with"]["policyPacks"] == "policy"


def test_main_workflow_deploys_each_stack_with_an_approval_for_prod():
    main = load("main.yml")
    assert main["on"] == {"push": {"branches": ["main"]}}
    assert main["concurrency"]["cancel-in-progress"] is False
    jobs = main["jobs"]
    assert jobs["dev"]["needs"] == "test" and jobs["prod"]["needs"] == "dev"
    assert jobs["prod"]["environment"] == "production"
    for stack in ("dev", "prod"):
        up = step_using(main, stack, "pulumi/actions")
        assert up["with"] == {**up["with"], "command": "up", "stack-name": stack, "policyPacks": "policy"}
        assert step_using(main, stack, "google-github-actions/auth")
        assert f".venv/bin/fleet policy --stack {stack}" in run_lines({"jobs": {stack: jobs[stack]}})


@pytest.mark.parametrize("name", ["pr.yml", "main.yml"])
def test_every_command_the_workflows_run_exists(name):
    makefile = (PROJECT_DIR / "Makefile").read_text()
    for line in run_lines(load(name)):
        words = shlex.split(expand(line).split(">")[0])
        if words[0] == "make":
            assert re.search(rf"^{words[1]}:", makefile, re.M), line
        else:
            assert words[0] == ".venv/bin/fleet", line
            parser().parse_args(words[1:])  # exits (SystemExit) on an unknown subcommand or flag
    workflow = load(name)
    packs = {s["with"]["policyPacks"] for job in workflow["jobs"] for s in steps(workflow, job)
             if "policyPacks" in s.get("with", {})}
    assert packs == {"policy"}
    assert all((PROJECT_DIR / "policy" / f).is_file() for f in ("PulumiPolicy.yaml", "__main__.py"))


# Write access a job may ask for, and the action that needs it: nothing else gets more than `contents: read`.
NEEDS_WRITE = {"id-token": "google-github-actions/auth", "pull-requests": "marocchino/sticky-pull-request-comment"}


@pytest.mark.parametrize("name", ["pr.yml", "main.yml"])
def test_each_job_gets_only_the_token_permissions_it_uses(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}  # the default for any job that says nothing
    for job_name, job in workflow["jobs"].items():
        granted = job.get("permissions", workflow["permissions"])
        assert granted.get("contents") == "read", job_name
        for scope, action in NEEDS_WRITE.items():
            needed = action in uses(workflow, job_name)
            assert (granted.get(scope) == "write") == needed, f"{name} {job_name}: {scope}"
        assert set(granted) <= {"contents", *NEEDS_WRITE}, job_name
    assert "permissions" in workflow["jobs"]["test"] and set(workflow["jobs"]["test"]["permissions"]) == {"contents"}


@pytest.mark.parametrize("name", ["pr.yml", "main.yml"])
def test_every_action_is_pinned_by_commit_with_its_version_beside_it(name):
    lines = [line for line in (WORKFLOWS / name).read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert lines
    for line in lines:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+\b", line), line
