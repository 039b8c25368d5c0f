"""Every name and label the program plans is one its API accepts, for any legal stack name; two stacks in one
project never share a physical name; names.py keeps names readable, stable and distinct.

The rules below are written from each API's documentation, independently of components/names.py, so a
mistake there cannot hide behind itself.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from components import names
from components.errors import FleetError
from fleet.program import Plan
from tests.stacks import AWKWARD_STACKS, LONG_MODEL, LONG_STACK, full_config, plan_stack

DNS_63 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # compute, Artifact Registry, SLO API ids (RFC 1035)


def bucket_ok(name: str) -> bool:
    """Cloud Storage: 3-63 of lowercase, digits, '-', '_', '.'; starts and ends alphanumeric; no 'goog' prefix,
    no 'google' (we never use dots, which would allow longer names)."""
    return (bool(re.fullmatch(r"[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]", name)) and not name.startswith("goog")
            and "google" not in name)


def matches(pattern: str | re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: bool(re.fullmatch(pattern, value))


COMPUTE = ("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
           "gcp:compute/backendService:BackendService", "gcp:compute/uRLMap:URLMap",
           "gcp:compute/globalAddress:GlobalAddress", "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
           "gcp:compute/targetHttpProxy:TargetHttpProxy", "gcp:compute/globalForwardingRule:GlobalForwardingRule",
           "gcp:compute/managedSslCertificate:ManagedSslCertificate", "gcp:compute/sSLPolicy:SSLPolicy",
           "gcp:compute/securityPolicy:SecurityPolicy")
# resource type -> input -> the rule its value must meet: every physical name the program sets.
NAME_RULES: dict[str, dict[str, Callable[[str], bool]]] = {
    "gcp:cloudrunv2/service:Service": {"name": matches(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?")},  # under 50
    "gcp:serviceaccount/account:Account": {"accountId": matches(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")},  # 6-30
    "gcp:secretmanager/secret:Secret": {"secretId": matches(r"[A-Za-z0-9_-]{1,255}")},
    "gcp:storage/bucket:Bucket": {"name": bucket_ok},
    "gcp:artifactregistry/repository:Repository": {"repositoryId": matches(DNS_63)},
    "gcp:monitoring/customService:CustomService": {"serviceId": matches(DNS_63)},
    "gcp:monitoring/slo:Slo": {"sloId": matches(DNS_63), "service": matches(DNS_63)},
    **{t: {"name": matches(DNS_63)} for t in COMPUTE},
}
# Types whose identity the API makes up (or that are bindings, versions, builds): no name of ours to check.
NO_NAME = frozenset({
    "docker-build:index:Image", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
    "gcp:projects/iAMMember:IAMMember", "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:secretmanager/secretVersion:SecretVersion", "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:monitoring/alertPolicy:AlertPolicy", "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig",
    "gcp:monitoring/dashboard:Dashboard", "gcp:monitoring/notificationChannel:NotificationChannel",
    "gcp:projects/iAMAuditConfig:IAMAuditConfig",  # the project's audit setting for one API
})
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
# Maps named `labels` that are not resource labels: a channel type's settings, an uptime target's fields.
NOT_LABELS = {("gcp:monitoring/notificationChannel:NotificationChannel", ("labels",)),
              ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", ("monitoredResource", "labels"))}
SERVICE_FILTER = re.compile(r'resource\.labels\.service_name = "([^"]*)"')


def label_maps(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every `labels` / `userLabels` map anywhere in a resource's inputs, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("labels", "userLabels") and isinstance(value, dict):
                yield (*path, key), value
            else:
                yield from label_maps(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from label_maps(item, path)


def rejected(plan: Plan) -> list[str]:
    """Every name or label in the plan its API would reject, described."""
    problems = []
    for r in plan.custom():
        assert r.type in NAME_RULES or r.type in NO_NAME, f"{r.type}: a new resource type; add its name rules here"
        for field, ok in NAME_RULES.get(r.type, {}).items():
            value = r.inputs.get(field)
            if not isinstance(value, str) or not ok(value):
                problems.append(f"{r.type} {r.name}: {field} {value!r}")
        for path, labels in label_maps(r.inputs):
            if (r.type, path) in NOT_LABELS:
                continue
            problems += [f"{r.type} {r.name}: {'.'.join(path)} {k!r}: {v!r}" for k, v in labels.items()
                         if not LABEL_KEY.fullmatch(k) or not isinstance(v, str) or not LABEL_VALUE.fullmatch(v)]
    return problems


def test_alert_titles_fit_and_two_stacks_never_share_one(awkward_plans):
    """Alert display names: at most 512 characters, and (as the API asks) not reused in one project."""
    titles = {s: [r.inputs["displayName"] for r in p.custom("gcp:monitoring/alertPolicy:AlertPolicy")]
              for s, p in awkward_plans.items()}
    assert all(len(t) <= 512 for ts in titles.values() for t in ts)
    assert len(set().union(*titles.values())) == sum(len(ts) for ts in titles.values())


def physical_names(plan: Plan) -> set[tuple[str, str]]:
    """(type, name) of everything the plan creates under a name of ours (an SLO under its service)."""
    found = set()
    for r in plan.custom():
        for field in NAME_RULES.get(r.type, {}):
            if (r.type, field) != ("gcp:monitoring/slo:Slo", "service"):
                found.add((r.type, f"{r.inputs.get('service', '')}/{r.inputs[field]}"
                           if r.type == "gcp:monitoring/slo:Slo" else r.inputs[field]))
    return found


def test_the_full_config_plans_every_named_resource_type(awkward_plans):
    for stack, plan in awkward_plans.items():
        assert set(NAME_RULES) <= {r.type for r in plan.custom()}, stack


@pytest.mark.parametrize("stack", AWKWARD_STACKS)
def test_every_name_and_label_of_an_awkward_stack_is_accepted(awkward_plans, stack):
    assert rejected(awkward_plans[stack]) == []


def test_stock_stacks_plan_only_accepted_names(prod_plan, dev_plan):
    assert rejected(prod_plan) == [] and rejected(dev_plan) == []


def test_references_use_the_physical_names(awkward_plans):
    """Monitoring filters, the balancer's NEGs and the SLOs point at what the plan actually creates."""
    plan = awkward_plans["Stg.EU_1"]
    services = {r.inputs["name"] for r in plan.custom("gcp:cloudrunv2/service:Service")}
    negs = {r.inputs["cloudRun"]["service"]
            for r in plan.custom("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup")}
    assert negs and negs <= services
    filtered = {m for r in plan.custom("gcp:monitoring/alertPolicy:AlertPolicy")
                for m in SERVICE_FILTER.findall(str(r.inputs["conditions"]))}
    assert filtered == services, "every service's alerts filter on its Cloud Run service name"
    alerts = [r.inputs["userLabels"] for r in plan.custom("gcp:monitoring/alertPolicy:AlertPolicy")]
    assert {labels["service"] for labels in alerts if "service" in labels} == services
    hosts = [labels for labels in alerts if "service" not in labels]  # the balancer's, one per model host
    assert {labels["alert"] for labels in hosts} == {"host-error-ratio"} and len(hosts) == 3
    custom = {r.inputs["serviceId"] for r in plan.custom("gcp:monitoring/customService:CustomService")}
    assert {r.inputs["service"] for r in plan.custom("gcp:monitoring/slo:Slo")} == custom
    assert {e["service"] for e in plan.outputs["endpoints"].values()} <= services


def test_logical_names_stay_what_users_type_and_physical_names_read_well(awkward_plans, prod_plan):
    dedicated = {r.name: r.inputs["name"] for r in prod_plan.custom("gcp:cloudrunv2/service:Service")}
    assert dedicated["demo-iowa"] == "demo-iowa-prod" and dedicated["shared-iowa"] == "shared-iowa-prod"
    assert "demo-iowa" in prod_plan.outputs["endpoints"]
    odd = {r.name: r.inputs["name"] for r in awkward_plans["Stg.EU_1"].custom("gcp:cloudrunv2/service:Service")}
    assert re.fullmatch(r"demo-iowa-stg-eu-1-[0-9a-f]{6}", odd["demo-iowa"])
    accounts = {r.inputs["accountId"] for r in awkward_plans["Stg.EU_1"].custom("gcp:serviceaccount/account:Account")}
    assert any(re.fullmatch(r"demo-stg-eu-1-[0-9a-f]{6}", a) for a in accounts), accounts


def test_two_stacks_in_one_project_share_no_physical_name(awkward_plans):
    plans = {**awkward_plans, **{s: plan_stack(s) for s in ("prod", "stg-eu-1", LONG_STACK[:-1] + "Y")}}
    for (a, plan_a), (b, plan_b) in itertools.combinations(plans.items(), 2):
        assert physical_names(plan_a).isdisjoint(physical_names(plan_b)), (a, b)
    stack_labels = {s: {r.inputs["labels"]["stack"] for r in p.custom("gcp:cloudrunv2/service:Service")}
                    for s, p in plans.items()}
    assert all(len(v) == 1 for v in stack_labels.values())
    assert len({next(iter(v)) for v in stack_labels.values()}) == len(plans), "the stack label tells stacks apart"


# --- names.py ----------------------------------------------------------------------------------------------


def test_a_name_the_api_accepts_is_used_as_is():
    assert names.cloud_run_service("demo-iowa", "prod") == "demo-iowa-prod"
    assert names.service_account_id("demo", "prod") == "demo-prod"
    assert names.secret_id("api-keys", "prod") == "yolo-fleet-prod-api-keys"
    assert names.bucket_name("my-project", "dev", "us-central1") == "my-project-dev-models-us-central1"
    assert names.compute_name("prod", "shared-iowa") == "yolo-fleet-prod-shared-iowa"
    assert names.label_value("prod") == "prod"


def test_a_name_that_does_not_fit_keeps_a_readable_prefix_and_a_hash_of_the_whole():
    readable = f"{LONG_MODEL}-changhua-county-{names.stack_token('Stg.EU_1')}"
    name = names.cloud_run_service(f"{LONG_MODEL}-changhua-county", "Stg.EU_1")
    assert len(readable) > 49 and len(name) <= 49
    assert name.startswith(f"{LONG_MODEL}-changhua")
    assert name.endswith("-" + hashlib.sha256(readable.encode()).hexdigest()[:6]), "the hash of the readable name"
    assert names.service_account_id("a", "b") not in ("a-b", "")  # too short: hashed up to 6+ characters
    assert len(names.service_account_id("a", "b")) >= 6


@pytest.mark.parametrize("rule", names.RULES, ids=lambda r: r.what)
def test_fitted_names_are_stable_distinct_and_within_limits(rule):
    # 500 inputs that agree on their first 80 characters and differ only beyond any limit, plus odd ones.
    inputs = [f"{'Stg.EU_1-' * 9}{i}" for i in range(500)] + ["A", "a", "-", "_x_", "goog-x", "x" * 300, "Ünïcödé"]
    fitted = [rule.fit(text) for text in inputs]
    assert fitted == [rule.fit(text) for text in inputs], "the same input always gives the same name"
    assert len(set(fitted)) == len(inputs), "two inputs never share a name"
    assert all(rule.accepts(name) for name in fitted)


@pytest.mark.parametrize("stack", [*AWKWARD_STACKS, "prod", "stg-eu-1"])
def test_stack_tokens_are_distinct_short_and_plain_stacks_appear_as_they_are(stack):
    token = names.stack_token(stack)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", token) and len(token) <= 19
    assert (token == stack) == bool(re.fullmatch(r"[a-z0-9]{1,12}", stack))
    others = {names.stack_token(s) for s in (*AWKWARD_STACKS, "prod", "stg-eu-1", "prod-5f5635") if s != stack}
    assert token not in others


def test_a_model_whose_account_would_be_a_shared_regions_stops_the_plan():
    with pytest.raises(FleetError, match="model shared-iowa and shared-iowa would share service account "
                                         "shared-iowa-prod; rename the model"):
        plan_stack("prod", full_config([{"name": "shared-iowa", "regions": ["us-central1"]}]))
