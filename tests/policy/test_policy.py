"""The policy pack on real resources of the mocked program: each rule passing and failing, and `fleet policy`.

Rules are called the way `pulumi preview --policy-pack policy` calls them: through the Policy objects'
validate with pulumi_policy's own argument classes and unknown-checking props (camelCase). Resources come from
the stock prod stack planned over a four-region catalog (tests/policy/conftest.py), edited where a test needs a
value the stack does not set; each message is compared whole, since it is what a user reads.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from fleet.cli import main
from fleet.cost import grand_total, platform_costs, stack_costs
from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.pricing import Traffic, load_prices
from fleet.program import Plan, evaluate, stack_config
from policy.config import PackConfigError, load_pack_config
from policy.facts import load_facts
from policy.policies import ALERT_POLICY, POLICIES, _resource_policy, _stack_policy
from tests.conftest import deployable, region_entry
from tests.policy.conftest import keep_small

SERVICE = "gcp:cloudrunv2/service:Service"
POLICY = {p.name: p for p in POLICIES}
SETTINGS = load_pack_config()
OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
SCALING = ("template", "scaling")
LIMITS = ("template", "containers", 0, "resources", "limits")
SMALL_SERVICES = ["demo-changhua-county", "demo-iowa", "demo-oregon", "demo-st-ghislain", "shared-changhua-county",
                  "shared-iowa", "shared-st-ghislain"]  # as the plan declares them


def service(plan: Plan, name: str) -> RecordedResource:
    return next(r for r in plan.custom(SERVICE) if r.name == name)


def validate(policy: str, resource: RecordedResource, props: dict[str, Any] | None = None,
             stack: str = "prod", options: dict[str, Any] | None = None) -> list[str]:
    """Messages `policy` reports for one resource, judged against the project's own stack files."""
    props = resource.inputs if props is None else props
    args = ResourceValidationArgs(resource.type, unknown_checking_proxy(copy.deepcopy(props)),
                                  f"urn:pulumi:{stack}::yolo-fleet::{resource.type}::{resource.name}", resource.name,
                                  OPTS, None, SETTINGS[policy].options if options is None else options)
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


def edited(plan: Plan, *path: str | int, value: Any, names: tuple[str, ...] = ()) -> list[RecordedResource]:
    """The plan's resources with `path` set to `value` in every Cloud Run service (or those named)."""
    return [RecordedResource(r.type, r.name, changed(r, *path, value=value), r.custom)
            if r.type == SERVICE and (not names or r.name in names) else r for r in plan.resources]


def only(policy: str) -> dict[str, Any]:
    return {name: s if name == policy else s.__class__(EnforcementLevel.DISABLED) for name, s in SETTINGS.items()}


def judged(plan: Plan | list[RecordedResource], policy: str | None = None, stack: str = "prod",
           catalog: Path | None = None, config: dict[str, str] | None = None) -> list[Violation]:
    """What `policy` (every policy if None) reports; one policy at a time keeps each rule's mutants to its tests."""
    resources = plan.resources if isinstance(plan, Plan) else plan
    settings = SETTINGS if policy is None else only(policy)
    return run_policies(resources, load_facts(stack, catalog=catalog, config=config), settings)


def as_engine_sends(resources: list[RecordedResource]) -> list[PolicyResource]:
    """Resources as a stack policy's validate receives them (prod stack URNs)."""
    return [PolicyResource(r.type, unknown_checking_proxy(r.inputs), f"urn:pulumi:prod::yolo-fleet::{r.type}::{r.name}",
                           r.name, OPTS, None, None, [], {}) for r in resources]


def by_policy(violations: list[Violation], policy: str) -> dict[str, str]:
    return {v.resource: v.message for v in violations if v.policy == policy}


def reported(policy: str, plan: Plan | list[RecordedResource], catalog: Path) -> dict[str, str]:
    """Resource -> message of what `policy` alone reports."""
    return by_policy(judged(plan, policy, catalog=catalog), policy)


@pytest.fixture
def gpu_plan(small_catalog: Path) -> Plan:
    model = {"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["us-central1"],
             "settings": {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}}
    return evaluate("prod", catalog=small_catalog, config_overrides={"yolo-fleet:models": json.dumps([model])})


def test_the_small_prod_stack_passes_every_policy_once_its_placeholders_are_replaced(small_catalog):
    """Every rule quiet on a stack a user would deploy: a rule that flags a good resource fails here."""
    ready = evaluate("prod", catalog=small_catalog, config_overrides=deployable("prod"))
    assert [s.name for s in ready.custom(SERVICE)] == SMALL_SERVICES
    assert judged(ready, catalog=small_catalog) == []


# max-instances-cap: prod's cap is 30 (Pulumi.prod.yaml)

def test_max_instances_above_the_stack_cap_is_refused_naming_service_region_and_fix(small_prod, small_catalog):
    found = reported("max-instances-cap", edited(small_prod, *SCALING, "maxInstanceCount", value=40.0), small_catalog)
    assert list(found) == SMALL_SERVICES  # every service of the stack
    assert found["demo-iowa"] == (
        "demo-iowa (us-central1): max_instances 40 is above the prod stack's cap of 30; lower max_instances where "
        "`fleet plan --stack prod --explain <region>` says it is set (or force it with yolo-fleet:forced_settings) "
        "or raise yolo-fleet:max_instances_cap in Pulumi.prod.yaml in a reviewed change")


@pytest.mark.parametrize(("value", "shown"), [(30.0, None), (30, None), (29.0, None), (31.0, "31"), (31, "31"),
                                              (30.5, "30.5")])
def test_max_instances_cap_is_inclusive(small_prod, value, shown):
    iowa = service(small_prod, "demo-iowa")
    found = validate("max-instances-cap", iowa, changed(iowa, *SCALING, "maxInstanceCount", value=value))
    expected = f"demo-iowa (us-central1): max_instances {shown} is above the prod stack's cap of 30"
    assert [m.split(";")[0] for m in found] == ([] if shown is None else [expected])


def test_max_instances_unset_is_above_any_cap_and_a_stack_without_a_cap_takes_anything(small_prod):
    iowa = service(small_prod, "demo-iowa")
    unset = copy.deepcopy(iowa.inputs)
    del unset["template"]["scaling"]["maxInstanceCount"]
    assert validate("max-instances-cap", iowa, unset) == [
        "demo-iowa (us-central1): max_instances is not set (Cloud Run allows 100), above the prod stack's cap of 30; "
        "set max_instances"]
    del unset["location"]
    assert validate("max-instances-cap", iowa, unset)[0].startswith("demo-iowa: max_instances is not set")
    # staging has no cap: config standing in for a stack file without yolo-fleet:max_instances_cap
    config = {k: v for k, v in stack_config("prod").items() if k != "yolo-fleet:max_instances_cap"}
    facts = load_facts("prod", config=config)
    assert facts.config.max_instances_cap is None
    many = edited(small_prod, *SCALING, "maxInstanceCount", value=1000.0)
    assert run_policies(many, facts, only("max-instances-cap")) == []


# min-within-max

@pytest.mark.parametrize(("low", "violates"), [(9.0, False), (10.0, False), (11.0, True)])
def test_min_instances_may_equal_max_instances(small_prod, low, violates):
    iowa = service(small_prod, "demo-iowa")  # max_instances 10
    found = validate("min-within-max", iowa, changed(iowa, *SCALING, "minInstanceCount", value=low))
    assert found == ([] if not violates else [
        "demo-iowa (us-central1): min_instances 11 is greater than max_instances 10; Cloud Run would refuse the "
        "revision. Lower min_instances or raise max_instances"])


def test_min_above_max_with_either_unset_or_unknown_is_not_judged(small_prod):
    iowa = service(small_prod, "demo-iowa")
    for value in (None, UNKNOWN_NUMBER_VALUE, "11"):
        assert validate("min-within-max", iowa, changed(iowa, *SCALING, "minInstanceCount", value=value)) == []
        props = changed(iowa, *SCALING, "maxInstanceCount", value=value)
        props["template"]["scaling"]["minInstanceCount"] = 50.0
        assert validate("min-within-max", iowa, props) == []
    props = changed(iowa, *SCALING, "minInstanceCount", value=12.5)
    assert validate("min-within-max", iowa, props)[0].startswith("demo-iowa (us-central1): min_instances 12.5 is")


# region-in-catalog

def test_region_missing_from_or_disabled_in_the_catalog_is_refused(small_prod, write_catalog):
    removed = write_catalog(lambda d: keep_small(d)["regions"].remove(region_entry(d, "us-west1")))
    found = reported("region-in-catalog", small_prod, removed)
    assert found == {"demo-oregon": "demo-oregon: region us-west1 is not in the catalog; add it to regions.yaml "
                                    "(with its tier and geography) or deploy to a catalog region (`fleet regions` "
                                    "lists them)"}
    disabled = write_catalog(lambda d: region_entry(keep_small(d), "us-west1").update(enabled=False))
    found = reported("region-in-catalog", small_prod, disabled)
    assert found == {"demo-oregon": "demo-oregon: region us-west1 is disabled in the catalog (enabled: false); "
                                    "enable it in regions.yaml or remove the service"}
    iowa = service(small_prod, "demo-iowa")
    assert validate("region-in-catalog", iowa) == []
    assert validate("region-in-catalog", iowa, changed(iowa, "location", value=UNKNOWN_STRING_VALUE)) == []
    assert validate("region-in-catalog", iowa, changed(iowa, "location", value="us-central2"))[0].startswith(
        "demo-iowa: region us-central2 is not in the catalog")


# gpu-where-offered

def test_gpu_service_in_a_gpu_region_with_enough_cpu_passes(gpu_plan):
    iowa = service(gpu_plan, "demo-iowa")
    assert iowa.inputs["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert validate("gpu-where-offered", iowa) == []


def test_gpu_where_not_offered_names_the_regions_that_offer_one(gpu_plan, catalog_data):
    iowa = service(gpu_plan, "demo-iowa")
    offered = ", ".join(r["id"] for r in catalog_data["regions"] if r.get("gpu_available"))
    assert offered.startswith("us-central1, us-east4, ")  # regions.yaml's, in its order
    assert validate("gpu-where-offered", iowa, changed(iowa, "location", value="us-west1")) == [
        "demo-iowa (us-west1): us-west1 offers no GPU (gpu_available is false in regions.yaml); choose one of "
        f"{offered}"]
    # a region outside the catalog is region-in-catalog's to report
    assert validate("gpu-where-offered", iowa, changed(iowa, "location", value="us-central2")) == []


@pytest.mark.parametrize(("cpu", "memory", "violates"), [
    ("4", "16Gi", False), ("4000m", "16384Mi", False), ("6", "24Gi", False),
    ("3999m", "16Gi", True), ("4", "16383Mi", True), ("2", "16Gi", True), ("4", "8Gi", True)])
def test_gpu_sizes_at_four_vcpu_and_sixteen_gib(gpu_plan, cpu, memory, violates):
    iowa = service(gpu_plan, "demo-iowa")
    props = changed(iowa, *LIMITS, "cpu", value=cpu)
    props["template"]["containers"][0]["resources"]["limits"]["memory"] = memory
    assert validate("gpu-where-offered", iowa, props) == ([] if not violates else [
        f"demo-iowa (us-central1): a GPU needs cpu >= 4 and memory >= 16Gi (got cpu {cpu}, memory {memory})"])


def test_gpu_without_sizes_is_judged_at_cloud_runs_defaults(gpu_plan):
    iowa = service(gpu_plan, "demo-iowa")
    props = copy.deepcopy(iowa.inputs)
    limits = props["template"]["containers"][0]["resources"]["limits"]
    del limits["cpu"], limits["memory"]
    assert validate("gpu-where-offered", iowa, props) == [
        "demo-iowa (us-central1): a GPU needs cpu >= 4 and memory >= 16Gi (got cpu None, memory None)"]
    limits.update(cpu="lots", memory="4")  # not quantities: no size at all
    assert validate("gpu-where-offered", iowa, props)[0].endswith("(got cpu lots, memory 4)")


def test_a_gpu_needs_the_limit_the_l4_selector_and_cpu_always_on(gpu_plan):
    iowa = service(gpu_plan, "demo-iowa")
    both = "demo-iowa (us-central1): a GPU needs both the nvidia.com/gpu limit and node selector accelerator nvidia-l4"
    assert validate("gpu-where-offered", iowa, changed(iowa, "template", "nodeSelector", "accelerator",
                                                        value="nvidia-t4")) == [both]
    no_limit = copy.deepcopy(iowa.inputs)
    del no_limit["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert validate("gpu-where-offered", iowa, no_limit) == [both]
    no_selector = copy.deepcopy(iowa.inputs)
    del no_selector["template"]["nodeSelector"]
    assert validate("gpu-where-offered", iowa, no_selector) == [both]
    idle = ["demo-iowa (us-central1): a GPU needs cpu_idle: false (instance-based billing)"]
    assert validate("gpu-where-offered", iowa, changed(iowa, *LIMITS[:-1], "cpuIdle", value=True)) == idle
    unset = copy.deepcopy(iowa.inputs)
    del unset["template"]["containers"][0]["resources"]["cpuIdle"]
    assert validate("gpu-where-offered", iowa, unset) == idle
    # every problem at once, in a fixed order
    worst = changed(iowa, "location", value="asia-east1")
    worst["template"]["nodeSelector"]["accelerator"] = "nvidia-t4"
    worst["template"]["containers"][0]["resources"]["limits"]["cpu"] = "2"
    worst["template"]["containers"][0]["resources"]["cpuIdle"] = True
    assert [m.split(": ", 1)[1][:20] for m in validate("gpu-where-offered", iowa, worst)] == [
        "asia-east1 offers no", "a GPU needs both the", "a GPU needs cpu >= 4", "a GPU needs cpu_idle"]


def test_cpu_services_and_unknown_gpu_settings_are_not_judged(small_prod, gpu_plan):
    oregon = service(small_prod, "demo-oregon")  # no GPU, in a region without one
    assert validate("gpu-where-offered", oregon) == []
    iowa = service(gpu_plan, "demo-iowa")
    for path in (LIMITS, ("template", "nodeSelector", "accelerator")):
        props = changed(iowa, *path, value=UNKNOWN_STRING_VALUE)
        props["location"] = "us-west1"
        assert validate("gpu-where-offered", iowa, props) == [], path
    selector_only = changed(oregon, "template", "nodeSelector", value={"accelerator": "nvidia-l4"})
    assert validate("gpu-where-offered", oregon, selector_only)[1].startswith(
        "demo-oregon (us-west1): a GPU needs both the nvidia.com/gpu limit")


# image-pinned-by-digest

@pytest.mark.parametrize(("image", "pinned"), [
    ("us-docker.pkg.dev/p/yolo-fleet/server@sha256:" + "0123456789abcdef" * 4, True),
    ("us-docker.pkg.dev/p/yolo-fleet/server:latest", False),
    ("us-docker.pkg.dev/p/yolo-fleet/server@sha256:" + "0123456789abcdef" * 4 + "0", False),  # 65 digits
    ("us-docker.pkg.dev/p/yolo-fleet/server@sha256:" + ("0123456789abcdef" * 4)[1:], False),  # 63 digits
    ("us-docker.pkg.dev/p/yolo-fleet/server@sha256:" + "0123456789ABCDEF" * 4, False),  # not how digests print
    ("us-docker.pkg.dev/p/yolo-fleet/server@sha512:" + "0123456789abcdef" * 4, False),
])
def test_image_must_be_pinned_by_a_sha256_digest(small_prod, image, pinned):
    iowa = service(small_prod, "demo-iowa")
    found = validate("image-pinned-by-digest", iowa, changed(iowa, "template", "containers", 0, "image", value=image))
    assert found == ([] if pinned else [
        f"demo-iowa (us-central1): container image '{image}' is not pinned by digest; deploy "
        "'<repository>@sha256:<digest>' (unset yolo-fleet:image to build, or give a digest)"])


def test_every_container_image_is_judged_and_unknown_is_not_a_violation(small_prod):
    iowa = service(small_prod, "demo-iowa")
    assert validate("image-pinned-by-digest", iowa) == []
    props = copy.deepcopy(iowa.inputs)
    containers = props["template"]["containers"]
    containers.append({**copy.deepcopy(containers[0]), "image": "gcr.io/p/sidecar:1"})
    containers.append({**copy.deepcopy(containers[0]), "image": "gcr.io/p/other:2"})
    assert [m.split("'")[1] for m in validate("image-pinned-by-digest", iowa, props)] == [
        "gcr.io/p/sidecar:1", "gcr.io/p/other:2"]
    before_build = changed(iowa, "template", "containers", 0, "image", value=UNKNOWN_STRING_VALUE)
    assert validate("image-pinned-by-digest", iowa, before_build) == []  # preview: can't tell yet
    unknown_containers = changed(iowa, "template", "containers", value=UNKNOWN_STRING_VALUE)
    assert validate("image-pinned-by-digest", iowa, unknown_containers) == []


# public-invoker-only-where-marked

def test_public_invoker_needs_the_catalog_to_mark_the_service_public(small_prod, write_catalog):
    private_iowa = write_catalog(
        lambda d: region_entry(keep_small(d), "us-central1").update(overrides={"public": False}))
    found = reported("public-invoker-only-where-marked", small_prod, private_iowa)
    assert found == {"demo-iowa": (
        "demo-iowa: anyone can invoke Cloud Run service demo-iowa-prod (invoker_iam_disabled is true) but "
        "demo-iowa-prod has public: false in the catalog and stack config; set `public: true` for it in regions.yaml "
        "or the stack settings if it is meant to be public, else remove the public grant")}
    planned_private = evaluate("prod", catalog=private_iowa)
    assert service(planned_private, "demo-iowa").inputs["invokerIamDisabled"] is False
    assert reported("public-invoker-only-where-marked", planned_private, private_iowa) == {}


def test_a_public_service_the_catalog_does_not_declare_is_refused(small_prod):
    iowa = service(small_prod, "demo-iowa")
    stray = changed(iowa, "name", value="demo-iowa-stray")
    [message] = validate("public-invoker-only-where-marked", iowa, stray)
    assert "service demo-iowa-stray (invoker_iam_disabled is true) but demo-iowa-stray is not a catalog service" \
           in message
    assert validate("public-invoker-only-where-marked", iowa, {**stray, "invokerIamDisabled": False}) == []
    unknown = changed(iowa, "invokerIamDisabled", value=UNKNOWN_STRING_VALUE)
    unknown["name"] = "demo-iowa-stray"
    assert validate("public-invoker-only-where-marked", iowa, unknown) == []


def grant(kind: str, logical: str, **props: Any) -> RecordedResource:
    return RecordedResource(f"gcp:{kind}", logical, props, True)


def test_public_iam_grant_on_a_private_service_is_refused(small_prod, small_catalog, write_catalog):
    private_iowa = write_catalog(
        lambda d: region_entry(keep_small(d), "us-central1").update(overrides={"public": False}))
    plan = evaluate("prod", catalog=private_iowa)
    invoker = "roles/run.invoker"
    grants = [
        grant("cloudrunv2/serviceIamMember:ServiceIamMember", "iowa-public", name="demo-iowa-prod",
              location="us-central1", role=invoker, member="allUsers"),
        grant("cloudrunv2/serviceIamPolicy:ServiceIamPolicy", "iowa-policy", name="demo-iowa-prod",
              location="us-central1",
              policyData=json.dumps({"bindings": [{"role": invoker, "members": ["allAuthenticatedUsers"]}]})),
        grant("cloudrunv2/serviceIamBinding:ServiceIamBinding", "iowa-binding", name="demo-iowa-prod", role=invoker,
              members=["user:a@northwind-vision.io", "allUsers"]),
        grant("cloudrun/iamMember:IamMember", "iowa-v1", service="demo-iowa-prod", role=invoker, member="allUsers"),
        grant("cloudrun/iamMember:IamMember", "iowa-v1-named", name="demo-iowa-prod", role=invoker,
              member="allUsers"),  # the v1 API names the service in `service`: this grant names none
        grant("cloudrunv2/serviceIamMember:ServiceIamMember", "iowa-viewer", name="demo-iowa-prod",
              role="roles/run.viewer", member="allUsers"),
        grant("cloudrunv2/serviceIamMember:ServiceIamMember", "iowa-user", name="demo-iowa-prod", role=invoker,
              member="user:a@northwind-vision.io"),
        grant("cloudrunv2/serviceIamMember:ServiceIamMember", "iowa-unknown", name="demo-iowa-prod", role=invoker,
              member=UNKNOWN_STRING_VALUE),
        grant("cloudrunv2/serviceIamMember:ServiceIamMember", "oregon-public", name="demo-oregon-prod",
              location="us-west1", role=invoker, member="allUsers"),  # public in the catalog: allowed
    ]
    found = reported("public-invoker-only-where-marked", plan.resources + grants, private_iowa)
    assert sorted(found) == ["iowa-binding", "iowa-policy", "iowa-public", "iowa-v1"]
    assert found["iowa-public"].startswith(
        "iowa-public: anyone can invoke Cloud Run service demo-iowa-prod (roles/run.invoker is granted to allUsers or "
        "allAuthenticatedUsers) but demo-iowa-prod has public: false")


# required-labels

def test_required_labels(small_prod):
    iowa = service(small_prod, "demo-iowa")
    assert validate("required-labels", iowa) == []
    assert validate("required-labels", iowa, changed(iowa, "labels", value={"managed-by": "yolo-fleet"})) == [
        "demo-iowa (us-central1): missing label(s) stack, region, role; declare services through "
        "components/service.py, which sets them"]
    assert validate("required-labels", iowa, changed(iowa, "labels", "stack", value="dev")) == [
        "demo-iowa (us-central1): wrong label value(s) stack='dev' (expected 'prod')"]
    wrong = changed(iowa, "labels", "region", value="us-west1")
    wrong["labels"]["managed-by"] = "terraform"
    assert validate("required-labels", iowa, wrong) == [
        "demo-iowa (us-central1): wrong label value(s) managed-by='terraform' (expected 'yolo-fleet'), "
        "region='us-west1' (expected 'us-central1')"]
    assert validate("required-labels", iowa, changed(iowa, "labels", value=UNKNOWN_STRING_VALUE)) == []
    assert SETTINGS["required-labels"].level.value == "advisory"  # as PulumiPolicy.yaml sets it


def test_which_labels_are_required_comes_from_the_pack_config_else_the_policys_default(small_prod):
    iowa = service(small_prod, "demo-iowa")
    no_role = copy.deepcopy(iowa.inputs)
    del no_role["labels"]["role"]
    assert validate("required-labels", iowa, no_role, options={})[0].startswith(
        "demo-iowa (us-central1): missing label(s) role;")  # the schema's default list
    assert validate("required-labels", iowa, no_role, options={"labels": ["stack"]}) == []
    assert validate("required-labels", iowa, no_role, options={"labels": ["team"]})[0].startswith(
        "demo-iowa (us-central1): missing label(s) team;")


# deletion-protection-in-prod

def test_deletion_protection_off_in_prod_is_refused_but_fine_in_dev(small_prod, small_catalog):
    off = edited(small_prod, "deletionProtection", value=False)
    found = reported("deletion-protection-in-prod", off, small_catalog)
    assert list(found) == SMALL_SERVICES
    assert found["shared-iowa"] == ("shared-iowa (us-central1): deletion protection is off in the prod stack; set "
                                    "yolo-fleet:deletion_protection: true in Pulumi.prod.yaml")
    iowa = service(small_prod, "demo-iowa")
    assert validate("deletion-protection-in-prod", iowa, changed(iowa, "deletionProtection", value=False),
                    stack="dev") == []
    assert validate("deletion-protection-in-prod", iowa, changed(iowa, "deletionProtection", value=None)) == []
    assert validate("deletion-protection-in-prod", iowa, changed(iowa, "deletionProtection", value=False),
                    stack="dev", options={"stacks": ["dev"]})[0].startswith(
        "demo-iowa (us-central1): deletion protection is off in the dev stack; set "
        "yolo-fleet:deletion_protection: true in Pulumi.dev.yaml")


# alert-policies

def alerts_of(resources: list[RecordedResource], service_name: str) -> list[RecordedResource]:
    return [r for r in resources if r.type == ALERT_POLICY and r.inputs["userLabels"]["service"] == service_name]


def test_every_service_needs_its_three_alert_policies(small_prod, small_catalog):
    alerts = [r for r in small_prod.resources if r.type == ALERT_POLICY]
    assert len(alerts) == 3 * len(SMALL_SERVICES)  # the monitoring component's, as the real plan declares them
    assert reported("alert-policies", small_prod, small_catalog) == {}
    without_alerts = [r for r in small_prod.resources if r.type != ALERT_POLICY]
    found = reported("alert-policies", without_alerts, small_catalog)
    assert list(found) == SMALL_SERVICES
    assert found["demo-iowa"] == (
        "demo-iowa-prod (us-central1) lacks alert policies: error-ratio, latency-p95, max-instances; every Cloud Run "
        "service needs one of each, with userLabels service, region, alert, managed-by (the monitoring component "
        "declares them)")
    latency = alerts_of(small_prod.resources, "demo-oregon-prod")[1]
    assert latency.inputs["userLabels"]["alert"] == "latency-p95"
    found = reported("alert-policies", [r for r in small_prod.resources if r is not latency], small_catalog)
    assert list(found) == ["demo-oregon"] and "lacks alert policies: latency-p95; every" in found["demo-oregon"]


def test_one_alert_policy_too_many_or_not_the_fleets_is_named(small_prod, small_catalog):
    oregon = alerts_of(small_prod.resources, "demo-oregon-prod")
    doubled = [*small_prod.resources, *(RecordedResource(ALERT_POLICY, f"{a.name}-again", copy.deepcopy(a.inputs), True)
                                        for a in oregon[:2])]
    violations = judged(doubled, "alert-policies", catalog=small_catalog)
    assert [(v.resource, v.message) for v in violations] == [(
        "demo-oregon", "demo-oregon-prod (us-west1) has more than one error-ratio, latency-p95 alert policy; keep "
                       "exactly one")]
    # an alert for the same service in another region, or not managed by the fleet, is not this service's
    for label, value in (("region", "us-central1"), ("managed-by", "someone-else"), ("service", "demo-iowa-prod")):
        moved = [RecordedResource(r.type, r.name, changed(r, "userLabels", label, value=value), True)
                 if r is oregon[0] else r for r in small_prod.resources]
        found = reported("alert-policies", moved, small_catalog)
        assert found["demo-oregon"].startswith("demo-oregon-prod (us-west1) lacks alert policies: error-ratio;"), label
    both = [r for r in doubled if r is not oregon[2]]
    assert [v.message[:55] for v in judged(both, "alert-policies", catalog=small_catalog)] == [
        "demo-oregon-prod (us-west1) lacks alert policies: max-i",
        "demo-oregon-prod (us-west1) has more than one error-rat"]


def test_alert_labels_or_service_names_unknown_during_preview_are_not_violations(small_prod, small_catalog):
    first = next(r for r in small_prod.resources if r.type == ALERT_POLICY)
    unknown = [RecordedResource(r.type, r.name, {**r.inputs, "userLabels": UNKNOWN_STRING_VALUE}, True)
               if r is first else r for r in small_prod.resources if r.type != ALERT_POLICY or r is first]
    assert reported("alert-policies", unknown, small_catalog) == {}
    no_alerts = [r for r in small_prod.resources if r.type != ALERT_POLICY]
    for key in ("name", "location"):
        renamed = [RecordedResource(r.type, r.name, changed(r, key, value=UNKNOWN_STRING_VALUE), True)
                   if r.type == SERVICE else r for r in no_alerts]
        assert reported("alert-policies", renamed, small_catalog) == {}, key
    first = next(r for r in no_alerts if r.type == SERVICE)
    one_unknown = [RecordedResource(r.type, r.name, changed(r, "name", value=UNKNOWN_STRING_VALUE), True)
                   if r is first else r for r in no_alerts]
    assert list(reported("alert-policies", one_unknown, small_catalog)) == SMALL_SERVICES[1:]  # the others still
    unnamed = [RecordedResource(r.type, r.name, changed(r, "name", value=None), True) if r.type == SERVICE else r
               for r in no_alerts]  # a service without a name: Pulumi names it after the resource
    assert reported("alert-policies", unnamed, small_catalog)["demo-iowa"].startswith(
        "demo-iowa (us-central1) lacks alert policies")


# monthly-budget: prod's is $400 (Pulumi.prod.yaml)

def always_on(resources: list[RecordedResource], small_catalog: Path) -> tuple[float, list[tuple[str, float]]]:
    """What `fleet cost` says the resources cost always on, and each of its lines."""
    plan = Plan("prod", resources, {})
    costs = stack_costs(plan, load_facts("prod", catalog=small_catalog).catalog, load_prices(), Traffic())
    platform = platform_costs(plan, load_prices(), Traffic())
    lines = [(c.shape.name, c.always_on) for c in costs] + [(p.item, p.always_on) for p in platform]
    return grand_total(costs, platform)["always_on"], lines


def test_always_on_cost_within_the_budget_passes_and_above_it_is_refused(small_prod, small_catalog):
    assert reported("monthly-budget", small_prod, small_catalog) == {}
    warm = edited(small_prod, *SCALING, "minInstanceCount", value=2.0)
    total, lines = always_on(warm, small_catalog)
    assert total > 400
    [violation] = judged(warm, "monthly-budget", catalog=small_catalog)
    assert violation.resource == "(stack)"
    assert len([line for line in lines if line[1]]) > 5  # the message names the five largest
    largest = sorted(lines, key=lambda line: line[1], reverse=True)[:5]
    assert largest[0][0] == "shared-changhua-county-prod"  # shared: 4 vCPU, 8 GiB
    assert violation.message == (
        f"always-on cost ${total:,.2f}/month (min_instances kept warm, plus the load balancer's forwarding rules and "
        "Cloud Armor policy, stored images and secret versions) is above the prod stack's budget of $400.00 "
        "(yolo-fleet:monthly_budget_usd in Pulumi.prod.yaml); largest: "
        f"{', '.join(f'{name} ${cost:,.2f}' for name, cost in largest)}. Lower min_instances or raise the budget in "
        "a reviewed change")
    # about the stack, not one of its resources: the engine is given no URN
    urns: list[str | None] = []
    POLICY["monthly-budget"].validate(StackValidationArgs(as_engine_sends(warm), {}),
                                      lambda message, urn=None: urns.append(urn))
    assert urns == [None]
    # a service without a name (Pulumi names it after the resource) is listed by its resource name
    unnamed = [RecordedResource(r.type, r.name, {k: v for k, v in r.inputs.items() if k != "name"}, True)
               if r.name == "shared-changhua-county" else r for r in warm]
    [message] = reported("monthly-budget", unnamed, small_catalog).values()
    assert "; largest: shared-changhua-county $" in message


def test_monthly_budget_equal_to_the_always_on_cost_passes_a_cent_under_fails(small_prod, small_catalog):
    total, _ = always_on(small_prod.resources, small_catalog)

    def verdict(budget: float | None) -> list[str]:
        config = {**stack_config("prod"), "yolo-fleet:monthly_budget_usd": repr(budget)}
        if budget is None:
            del config["yolo-fleet:monthly_budget_usd"]
        facts = load_facts("prod", catalog=small_catalog, config=config)
        return [v.message for v in run_policies(small_prod.resources, facts, only("monthly-budget"))]

    assert verdict(total) == [] and verdict(total + 0.01) == []
    assert verdict(total - 0.01)[0].startswith(f"always-on cost ${total:,.2f}/month")
    assert verdict(None) == []  # no budget: nothing to exceed


def test_budget_counts_only_catalog_regions_and_waits_for_unknown_sizes(small_prod, small_catalog):
    warm = edited(small_prod, *SCALING, "minInstanceCount", value=2.0)
    unknown = edited(Plan("prod", warm, {}), *SCALING, "minInstanceCount", value=UNKNOWN_NUMBER_VALUE,
                     names=("demo-iowa",))
    assert reported("monthly-budget", unknown, small_catalog) == {}  # can't tell yet
    # demo-oregon moved out of the catalog: region-in-catalog reports it, the budget does not price it
    total, lines = always_on(warm, small_catalog)
    oregon = dict(lines)["demo-oregon-prod"]
    moved = edited(Plan("prod", warm, {}), "location", value="us-central2", names=("demo-oregon",))
    [message] = reported("monthly-budget", moved, small_catalog).values()
    assert message.startswith(f"always-on cost ${total - oregon:,.2f}/month")


# gpu-quota: prod's is 0 GPUs per region unless set

def quota_facts(quota: int, small_catalog: Path) -> Any:
    config = {**stack_config("prod"), "yolo-fleet:gpu_quota_per_region": str(quota)}
    return load_facts("prod", catalog=small_catalog, config=config)


def gpu_quota(resources: list[RecordedResource], quota: int, small_catalog: Path) -> list[Violation]:
    return run_policies(resources, quota_facts(quota, small_catalog), only("gpu-quota"))


def test_gpu_services_max_instances_within_the_regions_quota_pass_one_over_fails(gpu_plan, small_catalog):
    scaled = edited(gpu_plan, *SCALING, "maxInstanceCount", value=3.0, names=("demo-iowa",))
    assert gpu_quota(scaled, 3, small_catalog) == []
    one = edited(gpu_plan, *SCALING, "maxInstanceCount", value=1.0, names=("demo-iowa",))
    assert gpu_quota(one, 0, small_catalog)[0].message.startswith(
        "us-central1: the GPU services may scale to 1 nvidia-l4 GPU (demo-iowa 1;")
    [violation] = gpu_quota(scaled, 2, small_catalog)
    assert (violation.resource, violation.message) == ("demo-iowa", (
        "us-central1: the GPU services may scale to 3 nvidia-l4 GPUs (demo-iowa 3; max_instances x GPUs) but the "
        "project's Cloud Run GPU quota there is 2 (yolo-fleet:gpu_quota_per_region in Pulumi.prod.yaml, default 0: a "
        "project has none until requested). Request 'Total Nvidia L4 GPU allocation, per project per region' (or its "
        "zonal-redundancy variant) for us-central1 in the console (IAM & Admin > Quotas) and set "
        "yolo-fleet:gpu_quota_per_region to the granted amount, or lower max_instances"))


def test_gpu_quota_sums_each_regions_services_gpus_times_max_instances(gpu_plan, small_catalog):
    iowa = RecordedResource(SERVICE, "demo-iowa", changed(service(gpu_plan, "demo-iowa"), *SCALING,
                                                          "maxInstanceCount", value=3.0), True)
    resources = [iowa, *(r for r in gpu_plan.resources if r.name != "demo-iowa")]
    two_gpus = changed(iowa, *LIMITS, "nvidia.com/gpu", value="2")
    unset = copy.deepcopy(iowa.inputs)
    del unset["template"]["scaling"]["maxInstanceCount"]  # Cloud Run's default: 100
    extra = [RecordedResource(SERVICE, "demo-b", two_gpus, True), RecordedResource(SERVICE, "demo-c", unset, True),
             RecordedResource(SERVICE, "demo-d", changed(iowa, "location", value="europe-west1"), True),
             RecordedResource(SERVICE, "demo-e", changed(iowa, *SCALING, "maxInstanceCount", value=2.5), True)]
    found = gpu_quota(resources + extra, 10, small_catalog)
    assert [(v.resource, v.message.split(" (")[0], v.message.split("(")[1].split(";")[0]) for v in found] == [
        ("demo-iowa", "us-central1: the GPU services may scale to 111 nvidia-l4 GPUs",
         "demo-iowa 3, demo-b 6, demo-c 100, demo-e 2")]
    assert gpu_quota(resources + extra[2:], 5, small_catalog) == []  # 3 + 2 in us-central1, 3 in europe
    assert [v.message[:12] for v in gpu_quota(resources + extra, 2, small_catalog)] == [
        "europe-west1", "us-central1:"]  # one violation per region, in order


def test_gpu_quota_ignores_cpu_services_and_waits_for_unknown_values(gpu_plan, small_catalog):
    iowa = service(gpu_plan, "demo-iowa")
    for path in (LIMITS, (*LIMITS, "nvidia.com/gpu"), ("location",), (*SCALING, "maxInstanceCount")):
        unknown = [RecordedResource(SERVICE, "demo-iowa", changed(iowa, *path, value=UNKNOWN_STRING_VALUE), True)]
        assert gpu_quota(unknown, 0, small_catalog) == [], path
    no_location = copy.deepcopy(iowa.inputs)
    del no_location["location"]
    assert gpu_quota([RecordedResource(SERVICE, "demo-iowa", no_location, True)], 0, small_catalog) == []
    assert gpu_quota([r for r in gpu_plan.resources if r.name != "demo-iowa"], 0, small_catalog) == []  # no GPU
    not_a_service = RecordedResource("gcp:cloudrun/service:Service", "v1", copy.deepcopy(iowa.inputs), True)
    assert gpu_quota([not_a_service], 0, small_catalog) == []


# How a rule becomes a Policy object

def probe(args: Any, facts: Any, options: Any) -> Any:
    yield f"{args.name} under {facts.stack} with {dict(options)}"


def stack_probe(resources: list[Any], facts: Any, options: Any) -> Any:
    yield f"{len(resources)} resources under {facts.stack} with {dict(options)}", resources[-1].urn
    yield "about the stack", ""


def test_a_resource_rule_judges_only_its_types_with_its_level_and_defaults_under_the_config(small_prod):
    policy = _resource_policy("probe", "a probe", frozenset({SERVICE}), probe, EnforcementLevel.ADVISORY,
                              PolicyConfigSchema({"n": {"type": "number", "default": 1}, "m": {"type": "number"}}))
    assert (policy.name, policy.description, policy.enforcement_level) == ("probe", "a probe",
                                                                          EnforcementLevel.ADVISORY)
    assert policy.config_schema is not None and "n" in policy.config_schema.properties
    found: list[tuple[str, Any]] = []
    for r in (service(small_prod, "demo-iowa"), next(r for r in small_prod.resources if r.type == ALERT_POLICY)):
        args = ResourceValidationArgs(r.type, unknown_checking_proxy(r.inputs),
                                      f"urn:pulumi:prod::yolo-fleet::{r.type}::{r.name}", r.name, OPTS, None, {"m": 2})
        policy.validate(args, lambda message, urn=None: found.append((message, urn)))
    assert found == [("demo-iowa under prod with {'n': 1, 'm': 2}", None)]
    assert _resource_policy("p", "p", frozenset(), probe, EnforcementLevel.MANDATORY).config_schema is None


def test_a_stack_rule_sees_every_resource_and_reports_where_it_says(small_prod):
    policy = _stack_policy("probe", "a probe", stack_probe, EnforcementLevel.MANDATORY,
                           PolicyConfigSchema({"n": {"type": "number", "default": 1}}))
    assert (policy.name, policy.description, policy.enforcement_level) == ("probe", "a probe",
                                                                          EnforcementLevel.MANDATORY)
    assert policy.config_schema is not None and "n" in policy.config_schema.properties
    resources = as_engine_sends(small_prod.resources[:3])
    found: list[tuple[str, Any]] = []
    policy.validate(StackValidationArgs(resources, {"n": 5}), lambda message, urn=None: found.append((message, urn)))
    assert found == [("3 resources under prod with {'n': 5}", resources[-1].urn), ("about the stack", None)]
    found.clear()
    policy.validate(StackValidationArgs(resources[:1], {}), lambda message, urn=None: found.append((message, urn)))
    assert found == [("1 resources under prod with {'n': 1}", resources[0].urn), ("about the stack", None)]
    found.clear()
    policy.validate(StackValidationArgs([], {}), lambda message, urn=None: found.append((message, urn)))
    assert found == []  # nothing to judge


# unknown values and the CLI

def test_unknown_values_during_preview_are_not_violations(small_prod, small_catalog):
    iowa = service(small_prod, "demo-iowa")
    unknown_max = changed(iowa, *SCALING, "maxInstanceCount", value=UNKNOWN_NUMBER_VALUE)
    for policy in ("max-instances-cap", "min-within-max", "required-labels", "gpu-where-offered"):
        assert validate(policy, iowa, unknown_max) == [], policy
    unknown_min = edited(small_prod, *SCALING, "minInstanceCount", value=UNKNOWN_NUMBER_VALUE)
    assert reported("monthly-budget", unknown_min, small_catalog) == {}


def test_fleet_policy_exits_1_on_a_mandatory_violation_and_lists_it(write_catalog, capsys):
    catalog = write_catalog(lambda d: region_entry(keep_small(d), "us-central1").update(
        overrides={"max_instances": 50}))
    assert main(["policy", "--stack", "prod", "--catalog", str(catalog)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("max-instances-cap"))
    assert "mandatory" in line and "demo-iowa" in line and "max_instances 50" in line


def test_fleet_policy_exits_0_when_every_policy_passes(small_catalog, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=deployable("prod")))
    assert main(["policy", "--stack", "prod", "--catalog", str(small_catalog)]) == 0
    assert capsys.readouterr().out.startswith(f"Stack 'prod': all {len(POLICIES)} policies pass")


def test_fleet_policy_levels_come_from_the_policy_config(write_catalog, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=deployable("prod")))
    catalog = write_catalog(lambda d: region_entry(keep_small(d), "us-central1").update(
        overrides={"max_instances": 50}))
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
