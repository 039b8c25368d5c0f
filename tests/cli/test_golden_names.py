"""Golden plan names: every physical name `fleet plan --json` gives for the dev and prod stacks equals the committed
tests/plans/<stack>.names.json, so a rename (a replaced resource in a real project) is a diff someone reviews."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet.program import PROJECT_DIR, Plan
from tests.plans.golden import REGENERATE, STACKS, UnknownType, golden_path, physical_names


def differences(golden: dict[str, list[str]], planned: dict[str, list[str]]) -> list[str]:
    """Readable lines: what the plan names that the golden file does not, and the reverse."""
    lines = []
    for type_ in sorted(set(golden) | set(planned)):
        was, now = golden.get(type_, []), planned.get(type_, [])
        added = sorted(set(now) - set(was)) or ([f"{len(now) - len(was)} more"] if len(now) > len(was) else [])
        removed = sorted(set(was) - set(now)) or ([f"{len(was) - len(now)} fewer"] if len(was) > len(now) else [])
        lines += [f"  {type_}: +{n}" for n in added] + [f"  {type_}: -{n}" for n in removed]
    return lines


@pytest.mark.parametrize("stack", STACKS)
def test_the_plans_names_are_the_golden_ones(stack: str, request: pytest.FixtureRequest):
    plan: Plan = request.getfixturevalue(f"{stack}_plan")
    planned = physical_names(json.loads(json.dumps(plan.to_json())))  # what `fleet plan --json` prints
    golden = json.loads(golden_path(stack).read_text())
    changed = differences(golden, planned)
    assert not changed, (f"stack {stack}'s physical names changed (renaming a resource replaces it in a real "
                         f"project):\n" + "\n".join(changed) + f"\nIf intended, run `{REGENERATE}` and commit "
                         f"tests/plans/{stack}.names.json with the change")


def test_the_golden_files_hold_the_names_users_know(dev_plan: Plan):
    golden = json.loads(golden_path("prod").read_text())
    assert len(golden["gcp:cloudrunv2/service:Service"]) == 46
    assert "demo-iowa-prod" in golden["gcp:cloudrunv2/service:Service"]
    assert golden["gcp:serviceaccount/account:Account"] == sorted(
        ["demo-prod", "shared-iowa-prod", "shared-st-ghislain-prod", "shared-changhua-county-prod"])
    assert "demo-iowa-prod-availability" in golden["gcp:monitoring/slo:Slo"], "an SLO by its own id, not its service"


def test_a_rename_is_reported_by_name():
    golden = {"gcp:cloudrunv2/service:Service": ["demo-iowa-prod", "demo-oregon-prod"]}
    planned = {"gcp:cloudrunv2/service:Service": ["demo-iowa-prod", "demo-oregon-prd"]}
    assert differences(golden, planned) == ["  gcp:cloudrunv2/service:Service: +demo-oregon-prd",
                                            "  gcp:cloudrunv2/service:Service: -demo-oregon-prod"]


def test_a_resource_type_nobody_classified_stops_the_generator():
    plan = {"resources": [{"type": "gcp:pubsub/topic:Topic", "name": "alerts", "inputs": {"name": "alerts"}}]}
    with pytest.raises(UnknownType, match="gcp:pubsub/topic:Topic"):
        physical_names(plan)


def test_make_golden_after_a_failed_plan_is_one_more_line_not_a_traceback():
    """`fleet plan --json | python -m tests.plans.golden`: a plan that failed sends nothing down the pipe."""
    done = subprocess.run([sys.executable, "-m", "tests.plans.golden"], input="", capture_output=True, text=True,
                          cwd=PROJECT_DIR, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "tests.plans.golden: no plan on stdin (empty); the plan's own error is above\n"
