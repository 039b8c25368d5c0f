"""The rollout policies (policy/rollout.py) on the real program's plans: a split Cloud Run can apply that names
only the revisions the plan creates or keeps, a start in one canary region, and a bake in production."""

from __future__ import annotations

from typing import Any

from fleet.policy import Violation
from fleet.program import CLOUD_RUN, evaluate
from tests.stacks import full_config, policy_violations

NEW = "models/demo-raw.onnx"
ROLLOUT_POLICIES = {"traffic-split", "rollout-starts-in-canary", "rollout-bake"}


def config(rollout: dict[str, Any]) -> dict[str, str]:
    return full_config([{"name": "demo", "file": "models/demo-e2e.onnx",
                         "regions": ["us-central1", "europe-west1", "asia-northeast1"], "rollout": rollout}])


def rollout_violations(stack: str, rollout: dict[str, Any], edit: Any = None) -> list[Violation]:
    cfg = config(rollout)
    plan = evaluate(stack, config=cfg)
    services = {r.inputs["location"]: r for r in plan.custom(CLOUD_RUN) if r.inputs["labels"]["role"] == "dedicated"}
    if edit:
        edit(services)
    return [v for v in policy_violations(stack, plan.resources, cfg) if v.policy in ROLLOUT_POLICIES]


def test_a_canary_as_fleet_rollout_writes_it_passes() -> None:
    assert rollout_violations("prod", {"to": NEW, "percent": 10, "regions": ["europe-west1"]}) == []
    assert rollout_violations("prod", {"to": NEW, "percent": 100, "regions": ["europe-west1", "us-central1"]}) == []


def test_a_split_must_sum_to_100_and_name_this_services_planned_revisions() -> None:
    def tamper(services: dict[str, Any]) -> None:
        canary, iowa = services["europe-west1"].inputs, services["us-central1"].inputs
        canary["traffics"][0]["percent"] = 80.0
        canary["traffics"][0]["revision"] = iowa["template"]["revision"]
        iowa["traffics"].append({"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision":
                                 iowa["name"] + "-000000000000", "percent": 0.0})

    found = rollout_violations("dev", {"to": NEW, "percent": 10, "regions": ["europe-west1"]}, tamper)
    messages = [v.message for v in found if v.policy == "traffic-split"]
    assert any("traffic percentages sum to 90, not 100" in m for m in messages)
    assert any("which is not a revision of demo-st-ghislain-dev" in m for m in messages)
    assert any(m.startswith("demo-iowa: traffic keeps revision(s) demo-iowa-dev-000000000000") and "in no rollout wave"
               in m for m in messages)
    assert all(v.level == "mandatory" for v in found)


def test_a_rollout_below_100_percent_starts_in_one_region_only() -> None:
    found = rollout_violations("dev", {"to": NEW, "percent": 10, "regions": ["europe-west1", "us-central1"]})
    assert [(v.policy, v.level) for v in found] == [("rollout-starts-in-canary", "mandatory")]
    assert "models[demo].rollout: 10% of traffic in 2 regions" in found[0].message


def test_production_needs_a_five_minute_bake_other_stacks_do_not() -> None:
    short = {"to": NEW, "percent": 10, "regions": ["europe-west1"], "bake_minutes": 2}
    found = rollout_violations("prod", short)
    assert [v.policy for v in found] == ["rollout-bake"]
    assert "rollout.bake_minutes: 2 is below the 5 minutes the prod stack requires" in found[0].message
    assert rollout_violations("dev", short) == []
