"""The pack's rules for the public entry, on the real mocked plan with `domain` set, and on that plan changed the
way a careless edit of components/routing.py would: no SSL policy, a weak one, a backend without Cloud Armor,
a service behind the balancer that refuses it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from pulumi_policy import EnforcementLevel

from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.program import Plan, evaluate
from policy.config import PolicySetting, load_pack_config
from policy.facts import load_facts
from tests.conftest import deployable

POLICIES = ("public-entry-tls-and-armor", "balancer-ingress")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return evaluate("dev", config_overrides={**deployable("dev"), "yolo-fleet:domain": "models.northwind-vision.io"})


def judged(resources: list[RecordedResource]) -> list[Violation]:
    settings = {name: s if name in POLICIES else PolicySetting(EnforcementLevel.DISABLED)
                for name, s in load_pack_config().items()}
    return run_policies(resources, load_facts("dev"), settings)


def changed(plan: Plan, type_suffix: str, change: Callable[[dict], None], name: str | None = None) -> list[Violation]:
    resources = copy.deepcopy(plan.resources)
    target = next(r for r in resources if r.type.endswith(type_suffix) and (name is None or r.name == name))
    change(target.inputs)
    return judged(resources)


def test_the_planned_entry_passes(plan, prod_plan):
    assert judged(plan.resources) == []
    assert judged(prod_plan.resources) == []


def test_an_https_proxy_without_an_ssl_policy_is_refused(plan):
    [v] = changed(plan, "TargetHttpsProxy", lambda i: i.pop("sslPolicy"))
    assert (v.policy, v.resource) == ("public-entry-tls-and-armor", "lb")
    assert "without an SSL policy, so Google's default accepts TLS 1.0 and 1.1" in v.message


@pytest.mark.parametrize(("change", "expected"), [
    ({"minTlsVersion": "TLS_1_1"}, "allows TLS_1_1 with profile MODERN"),
    ({"profile": "COMPATIBLE"}, "allows TLS_1_2 with profile COMPATIBLE"),
])
def test_a_weak_ssl_policy_is_refused(plan, change, expected):
    [v] = changed(plan, "SSLPolicy", lambda i: i.update(change))
    assert expected in v.message and "yolo-fleet:tls" in v.message


def test_a_backend_without_cloud_armor_is_refused(plan):
    [v] = changed(plan, "BackendService", lambda i: i.pop("securityPolicy"), name="model-demo")
    assert v.resource == "model-demo"
    assert "without a Cloud Armor security policy" in v.message


def test_a_service_behind_the_balancer_that_refuses_it_is_refused(plan):
    [v] = changed(plan, "cloudrunv2/service:Service", lambda i: i.update(ingress="INGRESS_TRAFFIC_INTERNAL_ONLY"),
                  name="demo-tokyo")
    assert (v.policy, v.resource) == ("balancer-ingress", "demo-tokyo")
    assert "ingress is INGRESS_TRAFFIC_INTERNAL_ONLY" in v.message
    assert changed(plan, "cloudrunv2/service:Service",
                   lambda i: i.update(ingress="INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"), name="demo-tokyo") == []
