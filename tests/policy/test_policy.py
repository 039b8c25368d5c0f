"""The policy pack on real resources of the mocked program: each rule passing and failing, and `fleet policy`.

Rules are called the way `pulumi preview --policy-pack policy` calls them: through the Policy objects'
validate with pulumi_policy's own argument classes and unknown-checking props (camelCase).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from fleet.cli import main
from fleet.cost import grand_total, platform_costs, stack_costs
from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.pricing import Traffic, load_prices
from fleet.program import Plan, evaluate
from policy.config import PackConfigError, load_pack_config
from policy.facts import load_facts
from policy.policies import ALERT_POLICY, POLICIES
from tests.conftest import deployable, prod_in, region_entry

SERVICE = "gcp:cloudrunv2/service:Service"
POLICY = {p.name: p for p in POLICIES}
SETTINGS = load_pack_config()
OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def service(plan: Plan, name: str) -> RecordedResource:
    return next(r for r in plan.custom(SERVICE) if r.name == name)


def validate(policy: str, resource: RecordedResource, props: dict[str, Any] | None = None,
             stack: str = "prod") -> list[str]:
    """Messages `policy` reports for one resource, judged against the project's own stack files."""
    props = resource.inputs if props is None else props
    args = ResourceValidationArgs(resource.type, unknown_checking_proxy(copy.deepcopy(props)),
                                  f"urn:pulumi:{stack}::yolo-fleet::{resource.type}::{resource.name}", resource.name,
                                  OPTS, None, SETTINGS[policy].options)
    found: list[str] = []
    POLICY[policy].validate(args, lambda message, urn=None: found.append(message))
    return found


def changed(resource: RecordedResource, *path: str | int, value: Any) -> dict[str, Any]:
    props = copy.deepcopy(resource.inputs)
    node = props
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return props


def judged(plan: Plan, stack: str = "prod", catalog: Path | None = None) -> list[Violation]:
    return run_policies(plan.resources, load_facts(stack, catalog=catalog), SETTINGS)


def by_policy(violations: list[Violation], policy: str) -> dict[str, str]:
    return {v.resource: v.message for v in violations if v.policy == policy}


@pytest.fixture(scope="module")
def gpu_plan() -> Plan:
    model = {"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["us-central1"],
             "settings": {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}}
    return evaluate("prod", config_overrides={"yolo-fleet:models": json.dumps([model])})


def test_real_prod_and_dev_plans_pass_every_policy_once_their_placeholders_are_replaced(prod_plan, dev_plan):
    for plan in (prod_plan, dev_plan):
        ready = evaluate(plan.stack, config_overrides=deployable(plan.stack))
        assert judged(ready, plan.stack) == [], plan.stack
        # The stock files as shipped: only what a first deploy must replace (tests/policy/test_readiness.py has
        # the detail)
        assert {v.policy for v in judged(plan, plan.stack)} == {
            "no-placeholders", "alert-notifications-in-prod" if plan.stack == "prod" else "alert-notifications"}


def test_max_instances_above_the_stack_cap_is_refused():
    plan = evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:forced_settings": json.dumps(
        {"max_instances": 40})})
    found = by_policy(judged(plan), "max-instances-cap")
    assert sorted(found) == sorted(r.name for r in plan.custom(SERVICE))  # every service of the stack
    assert "max_instances 40 is above the prod stack's cap of 30" in found["demo-iowa"]
    assert "yolo-fleet:max_instances_cap in Pulumi.prod.yaml" in found["demo-iowa"]


def test_max_instances_at_or_below_the_cap_passes(prod_plan):
    assert validate("max-instances-cap", service(prod_plan, "demo-eemshaven")) == []  # 20 <= 30
    over = changed(service(prod_plan, "demo-eemshaven"), "template", "scaling", "maxInstanceCount", value=31.0)
    assert validate("max-instances-cap", service(prod_plan, "demo-eemshaven"), over)


def test_min_above_max_is_refused(prod_plan):
    iowa = service(prod_plan, "demo-iowa")
    assert validate("min-within-max", iowa) == []
    props = changed(iowa, "template", "scaling", "minInstanceCount", value=15.0)
    [message] = validate("min-within-max", iowa, props)
    assert message.startswith("demo-iowa (us-central1): min_instances 15 is greater than max_instances 10")


def test_region_missing_from_or_disabled_in_the_catalog_is_refused(prod_plan, write_catalog):
    removed = write_catalog(lambda d: d["regions"].remove(region_entry(d, "us-west1")))
    found = by_policy(judged(prod_plan, catalog=removed), "region-in-catalog")
    assert list(found) == ["demo-oregon"]
    assert "region us-west1 is not in the catalog" in found["demo-oregon"]
    disabled = write_catalog(lambda d: region_entry(d, "us-west1").update(enabled=False))
    found = by_policy(judged(prod_plan, catalog=disabled), "region-in-catalog")
    assert "disabled in the catalog" in found["demo-oregon"]
    moved = changed(service(prod_plan, "demo-iowa"), "location", value="us-central2")
    assert "not in the catalog" in validate("region-in-catalog", service(prod_plan, "demo-iowa"), moved)[0]


def test_gpu_service_in_a_gpu_region_with_enough_cpu_passes(gpu_plan):
    iowa = service(gpu_plan, "demo-iowa")
    assert iowa.inputs["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert validate("gpu-where-offered", iowa) == []


def test_gpu_where_not_offered_or_undersized_is_refused(gpu_plan):
    iowa = service(gpu_plan, "demo-iowa")
    [message] = validate("gpu-where-offered", iowa, changed(iowa, "location", value="us-east1"))
    assert "us-east1 offers no GPU" in message and "us-central1" in message
    small = changed(iowa, "template", "containers", 0, "resources", "limits", "cpu", value="2")
    assert "needs cpu >= 4 and memory >= 16Gi" in validate("gpu-where-offered", iowa, small)[0]
    idle = changed(iowa, "template", "containers", 0, "resources", "cpuIdle", value=True)
    assert "cpu_idle: false" in validate("gpu-where-offered", iowa, idle)[0]


def test_image_must_be_pinned_by_digest_and_unknown_is_not_a_violation(prod_plan):
    iowa = service(prod_plan, "demo-iowa")
    assert validate("image-pinned-by-digest", iowa) == []
    tagged = changed(iowa, "template", "containers", 0, "image", value="us-docker.pkg.dev/p/yolo-fleet/server:latest")
    [message] = validate("image-pinned-by-digest", iowa, tagged)
    assert "'us-docker.pkg.dev/p/yolo-fleet/server:latest' is not pinned by digest" in message
    before_build = changed(iowa, "template", "containers", 0, "image", value=UNKNOWN_STRING_VALUE)
    assert validate("image-pinned-by-digest", iowa, before_build) == []  # preview: can't tell yet


def test_public_invoker_needs_the_catalog_to_mark_the_service_public(prod_plan, write_catalog):
    private_iowa = write_catalog(lambda d: region_entry(d, "us-central1").update(overrides={"public": False}))
    found = by_policy(judged(prod_plan, catalog=private_iowa), "public-invoker-only-where-marked")
    assert list(found) == ["demo-iowa"]  # the catalog made only demo-iowa private; the resource is still public
    assert "invoker_iam_disabled is true" in found["demo-iowa"] and "public: false" in found["demo-iowa"]
    planned_private = evaluate("prod", catalog=private_iowa, config_overrides=prod_in())
    assert service(planned_private, "demo-iowa").inputs["invokerIamDisabled"] is False
    assert by_policy(judged(planned_private, catalog=private_iowa), "public-invoker-only-where-marked") == {}


def test_public_iam_grant_on_a_private_service_is_refused(prod_plan, write_catalog):
    private_iowa = write_catalog(lambda d: region_entry(d, "us-central1").update(overrides={"public": False}))
    plan = evaluate("prod", catalog=private_iowa, config_overrides=prod_in())
    grants = [
        RecordedResource("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "iowa-public",
                         {"name": "demo-iowa-prod", "location": "us-central1", "role": "roles/run.invoker",
                          "member": "allUsers"}, True),
        RecordedResource("gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy", "iowa-policy",
                         {"name": "demo-iowa-prod", "location": "us-central1", "policyData": json.dumps({"bindings": [
                             {"role": "roles/run.invoker", "members": ["allAuthenticatedUsers"]}]})}, True),
        RecordedResource("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "tokyo-public",
                         {"name": "demo-tokyo-prod", "location": "asia-northeast1", "role": "roles/run.invoker",
                          "member": "allUsers"}, True),  # public in the catalog: allowed
    ]
    found = by_policy(run_policies(plan.resources + grants, load_facts("prod", catalog=private_iowa), SETTINGS),
                      "public-invoker-only-where-marked")
    assert sorted(found) == ["iowa-policy", "iowa-public"]
    assert "roles/run.invoker is granted to allUsers" in found["iowa-public"]


def test_required_labels(prod_plan):
    iowa = service(prod_plan, "demo-iowa")
    assert validate("required-labels", iowa) == []
    [message] = validate("required-labels", iowa, changed(iowa, "labels", value={"managed-by": "yolo-fleet"}))
    assert "missing label(s) stack, region, role" in message
    [message] = validate("required-labels", iowa, changed(iowa, "labels", "stack", value="dev"))
    assert "stack='dev' (expected 'prod')" in message
    assert SETTINGS["required-labels"].level.value == "advisory"  # as PulumiPolicy.yaml sets it


def test_deletion_protection_off_in_prod_is_refused_but_fine_in_dev(dev_plan):
    plan = evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:deletion_protection": "false"})
    found = by_policy(judged(plan), "deletion-protection-in-prod")
    assert sorted(found) == sorted(r.name for r in plan.custom(SERVICE)), "every service of the stack"
    assert "yolo-fleet:deletion_protection: true in Pulumi.prod.yaml" in found["shared-iowa"]
    assert by_policy(judged(dev_plan, "dev"), "deletion-protection-in-prod") == {}


def test_every_service_needs_its_three_alert_policies(prod_plan):
    alerts = [r for r in prod_plan.resources if r.type == ALERT_POLICY]
    assert len(alerts) == 3 * 46  # the monitoring component's, as the real plan declares them
    assert by_policy(judged(prod_plan), "alert-policies") == {}
    without_alerts = [r for r in prod_plan.resources if r.type != ALERT_POLICY]
    found = by_policy(run_policies(without_alerts, load_facts("prod"), SETTINGS), "alert-policies")
    assert len(found) == 46
    assert "demo-iowa-prod (us-central1) lacks alert policies: error-ratio, latency-p95, max-instances" in found[
        "demo-iowa"]
    without_latency = [r for r in prod_plan.resources if not (r.type == ALERT_POLICY and r.inputs["userLabels"][
        "service"] == "demo-tokyo-prod" and r.inputs["userLabels"]["alert"] == "latency-p95")]
    found = by_policy(run_policies(without_latency, load_facts("prod"), SETTINGS), "alert-policies")
    assert list(found) == ["demo-tokyo"] and "lacks alert policies: latency-p95" in found["demo-tokyo"]
    tokyo = next(a for a in alerts if a.inputs["userLabels"]["service"] == "demo-tokyo-prod")
    doubled = [*prod_plan.resources, RecordedResource(ALERT_POLICY, f"{tokyo.name}-again", copy.deepcopy(tokyo.inputs),
                                                      True)]
    found = by_policy(run_policies(doubled, load_facts("prod"), SETTINGS), "alert-policies")
    assert list(found) == ["demo-tokyo"] and "more than one" in found["demo-tokyo"]


def test_always_on_cost_within_the_budget_passes_and_above_it_is_refused(prod_plan, capsys):
    assert by_policy(judged(prod_plan), "monthly-budget") == {}  # $301.43 of $400
    warm = evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:settings": json.dumps({"min_instances": 1})})
    [message] = by_policy(judged(warm), "monthly-budget").values()
    # The same cost model as `fleet cost`: the policy quotes the total `fleet cost --json` reports.
    assert main(["cost", "--json"]) == 0
    assert "is above the prod stack's budget of $400.00" in message and "min_instances" in message
    total = json.loads(capsys.readouterr().out)["total"]["always_on"]
    # warm instances $275.94 + one forwarding-rule charge $18.25 + 3 x 0.4 GB of images $0.12 + 2 secret versions $0.12
    # + Cloud Armor's policy and its 2 rules $7
    assert total == pytest.approx(275.94 + 18.25 + 0.12 + 0.12 + 7.0)


def test_budget_message_uses_the_shared_cost_model(prod_plan):
    warm = evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:settings": json.dumps({"min_instances": 1})})
    facts = load_facts("prod")
    costs = stack_costs(warm, facts.catalog, load_prices(), Traffic())
    expected = grand_total(costs, platform_costs(warm, load_prices(), Traffic()))["always_on"]
    [message] = by_policy(judged(warm), "monthly-budget").values()
    assert f"always-on cost ${expected:,.2f}/month" in message
    assert expected == pytest.approx(sum(c.always_on for c in costs) + 18.25 + 0.12 + 0.12 + 7.0), \
        "stack-wide charges count"


def test_unknown_values_during_preview_are_not_violations(prod_plan):
    iowa = service(prod_plan, "demo-iowa")
    unknown_max = changed(iowa, "template", "scaling", "maxInstanceCount", value=UNKNOWN_NUMBER_VALUE)
    for policy in ("max-instances-cap", "min-within-max", "required-labels", "gpu-where-offered"):
        assert validate(policy, iowa, unknown_max) == [], policy
    unknown_min = [RecordedResource(r.type, r.name, changed(r, "template", "scaling", "minInstanceCount",
                                                            value=UNKNOWN_NUMBER_VALUE), True)
                   if r.type == SERVICE else r for r in prod_plan.resources]
    assert by_policy(run_policies(unknown_min, load_facts("prod"), SETTINGS), "monthly-budget") == {}


def test_fleet_policy_exits_1_on_a_mandatory_violation_and_lists_it(write_catalog, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=prod_in()))
    catalog = write_catalog(lambda d: region_entry(d, "us-central1").update(overrides={"max_instances": 50}))
    assert main(["policy", "--stack", "prod", "--catalog", str(catalog)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("max-instances-cap"))
    assert "mandatory" in line and "demo-iowa" in line and "max_instances 50" in line


def test_fleet_policy_exits_0_when_every_policy_passes(monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=deployable("prod")))
    assert main(["policy", "--stack", "prod"]) == 0
    assert capsys.readouterr().out.startswith(f"Stack 'prod': all {len(POLICIES)} policies pass")


def test_fleet_policy_levels_come_from_the_policy_config(write_catalog, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(
        evaluate, config_overrides={**deployable("prod"), **prod_in()}))
    catalog = write_catalog(lambda d: region_entry(d, "us-central1").update(overrides={"max_instances": 50}))
    levels = tmp_path / "PulumiPolicy.yaml"
    levels.write_text("config:\n  max-instances-cap: advisory\n")
    assert main(["policy", "--catalog", str(catalog), "--policy-config", str(levels), "--json"]) == 0
    violations = json.loads(capsys.readouterr().out)["violations"]
    assert [(v["policy"], v["level"], v["resource"]) for v in violations] == [
        ("max-instances-cap", "advisory", "demo-iowa")]
    levels.write_text("config:\n  max-instances-cap: disabled\n")
    assert main(["policy", "--catalog", str(catalog), "--policy-config", str(levels), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["violations"] == []


def test_fleet_policy_config_mistakes_exit_2(tmp_path, capsys):
    levels = tmp_path / "PulumiPolicy.yaml"
    levels.write_text("config:\n  max-instance-cap: mandatory\n")
    assert main(["policy", "--policy-config", str(levels)]) == 2
    captured = capsys.readouterr()
    assert "unknown policy (did you mean 'max-instances-cap'?)" in captured.err and captured.out == ""
    levels.write_text("config:\n  required-labels: {enforcementLevel: strict}\n")
    with pytest.raises(PackConfigError, match="must be one of advisory, mandatory, disabled"):
        load_pack_config(levels)
    levels.write_text("config:\n  required-labels: {label: [a]}\n")
    with pytest.raises(PackConfigError, match="unknown setting"):
        load_pack_config(levels)
    assert main(["policy", "--stack", "staging"]) == 2
