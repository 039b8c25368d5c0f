"""Every numeric policy at its exact threshold: a value equal to the cap passes, one step over fails. A flipped
comparison (`>` for `>=`) changes what a pull request may deploy, so each bound is pinned on both sides."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pulumi_policy import EnforcementLevel

from fleet.cost import grand_total, platform_costs, stack_costs
from fleet.policy import run_policies
from fleet.pricing import Traffic, load_prices
from fleet.program import Plan, evaluate, stack_config
from policy.config import load_pack_config
from policy.facts import load_facts
from tests.policy.test_policy import changed, service, validate

SCALING = ("template", "scaling")
LIMITS = ("template", "containers", 0, "resources", "limits")
ONLY_BUDGET = {name: setting if name == "monthly-budget" else replace(setting, level=EnforcementLevel.DISABLED)
               for name, setting in load_pack_config().items()}


@pytest.mark.parametrize(("value", "violates"), [(29.0, False), (30.0, False), (31.0, True)])
def test_max_instances_cap_is_inclusive(prod_plan, value, violates):
    """prod's cap is 30 (Pulumi.prod.yaml)."""
    eemshaven = service(prod_plan, "demo-eemshaven")
    found = validate("max-instances-cap", eemshaven, changed(eemshaven, *SCALING, "maxInstanceCount", value=value))
    assert bool(found) is violates
    if violates:
        assert "max_instances 31 is above the prod stack's cap of 30" in found[0]


@pytest.mark.parametrize(("low", "violates"), [(9.0, False), (10.0, False), (11.0, True)])
def test_min_instances_may_equal_max_instances(prod_plan, low, violates):
    iowa = service(prod_plan, "demo-iowa")  # max_instances 10
    found = validate("min-within-max", iowa, changed(iowa, *SCALING, "minInstanceCount", value=low))
    assert bool(found) is violates


@pytest.fixture(scope="module")
def gpu_plan() -> Plan:
    model = {"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["us-central1"],
             "settings": {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}}
    return evaluate("prod", config_overrides={"yolo-fleet:models": json.dumps([model])})


@pytest.mark.parametrize(("cpu", "memory", "violates"), [
    ("4", "16Gi", False), ("4000m", "16384Mi", False), ("6", "24Gi", False),
    ("3999m", "16Gi", True), ("4", "16383Mi", True), ("2", "16Gi", True), ("4", "8Gi", True)])
def test_gpu_sizes_at_four_vcpu_and_sixteen_gib(gpu_plan, cpu, memory, violates):
    iowa = service(gpu_plan, "demo-iowa")
    props = changed(iowa, *LIMITS, "cpu", value=cpu)
    props["template"]["containers"][0]["resources"]["limits"]["memory"] = memory
    found = validate("gpu-where-offered", iowa, props)
    assert bool(found) is violates, found
    if violates:
        assert "a GPU needs cpu >= 4 and memory >= 16Gi" in found[0]


def test_monthly_budget_equal_to_the_always_on_cost_passes_a_cent_under_fails():
    # forced: dev's own forced_settings (min_instances 0) would beat a plain stack setting
    config = {**stack_config("dev"), "yolo-fleet:forced_settings": json.dumps({"min_instances": 1})}
    plan = evaluate("dev", config=config)
    facts = load_facts("dev", config=config)
    total = grand_total(stack_costs(plan, facts.catalog, load_prices(), Traffic()),
                        platform_costs(plan, load_prices(), Traffic()))["always_on"]  # what `fleet cost` says
    assert total > 50, "over the stock file's $50: only the budget configured below decides"

    def verdict(budget: float) -> list[str]:
        judged = load_facts("dev", config={**config, "yolo-fleet:monthly_budget_usd": repr(budget)})
        return [v.message for v in run_policies(plan.resources, judged, ONLY_BUDGET)]

    assert verdict(total) == []
    assert verdict(total + 0.01) == []
    [message] = verdict(total - 0.01)
    assert f"always-on cost ${total:,.2f}/month" in message
