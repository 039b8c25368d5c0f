"""The pack itself, started as `pulumi preview --policy-pack policy` starts it: `policy/__main__.py` run from
policy/, printing its gRPC port, then asked over the Analyzer protocol what it knows and what it finds.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from fleet.policy import run_policies
from fleet.program import PROJECT_DIR, evaluate
from policy.config import load_pack_config
from policy.facts import load_facts
from policy.policies import POLICIES
from tests.conftest import deployable

SERVICE = "gcp:cloudrunv2/service:Service"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    pack = subprocess.Popen([sys.executable, "__main__.py"], cwd=PROJECT_DIR / "policy", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = pack.stdout.readline().strip()  # type: ignore[union-attr]
        assert port.isdigit(), pack.stderr.read() if pack.poll() is not None else port  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        pack.terminate()
        pack.wait(timeout=10)


def analyze(analyzer: analyzer_pb2_grpc.AnalyzerStub, name: str, props: dict[str, Any]) -> list[Any]:
    properties = struct_pb2.Struct()
    properties.update(props)
    request = analyzer_pb2.AnalyzeRequest(type=SERVICE, properties=properties, name=name,
                                          urn=f"urn:pulumi:prod::yolo-fleet::{SERVICE}::{name}")
    return list(analyzer.Analyze(request).diagnostics)


def test_the_pack_announces_every_policy_and_the_levels_of_pulumipolicy_yaml(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "yolo-fleet"
    assert [p.name for p in info.policies] == [p.name for p in POLICIES]
    assert info.initialConfig["required-labels"].enforcementLevel == analyzer_pb2.ADVISORY
    assert list(info.initialConfig["required-labels"].properties["labels"]) == ["managed-by", "stack", "region",
                                                                                 "role"]
    assert info.initialConfig["monthly-budget"].enforcementLevel == analyzer_pb2.MANDATORY
    roles = info.initialConfig["service-account-project-roles"].properties["allowedProjectRoles"]
    assert list(roles) == ["roles/logging.logWriter", "roles/monitoring.metricWriter"]


def test_the_pack_judges_a_real_service_over_grpc(analyzer, prod_plan):
    iowa = next(r for r in prod_plan.custom(SERVICE) if r.name == "demo-iowa")
    assert analyze(analyzer, "demo-iowa", iowa.inputs) == []
    tagged = copy.deepcopy(iowa.inputs)
    tagged["template"]["containers"][0]["image"] = "us-docker.pkg.dev/p/yolo-fleet/inference-server:latest"
    [diagnostic] = analyze(analyzer, "demo-iowa", tagged)
    assert diagnostic.policyName == "image-pinned-by-digest"
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert "not pinned by digest" in diagnostic.message
    unknown = copy.deepcopy(iowa.inputs)
    unknown["template"]["containers"][0]["image"] = UNKNOWN_STRING_VALUE  # preview, before the image is built
    assert analyze(analyzer, "demo-iowa", unknown) == []


def test_the_pack_refuses_the_stock_placeholders_and_silent_alerts_over_grpc(analyzer, prod_plan):
    """The stack policies as the engine runs them: every resource, secrets as the engine sends them (the pack
    unwraps them), the stack's facts read from the project's own files."""
    resources = []
    for r in prod_plan.custom():
        properties = struct_pb2.Struct()
        properties.update(r.inputs)
        resources.append(analyzer_pb2.AnalyzerResource(
            type=r.type, properties=properties, name=r.name, urn=f"urn:pulumi:prod::yolo-fleet::{r.type}::{r.name}"))
    diagnostics = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources)).diagnostics
    found = {(d.policyName, d.enforcementLevel) for d in diagnostics}
    assert found == {("no-placeholders", analyzer_pb2.MANDATORY),
                     ("alert-notifications-in-prod", analyzer_pb2.MANDATORY)}
    messages = "\n".join(d.message for d in diagnostics)
    assert "key digest 00000000...0000 (one repeated character) in api-keys" in messages  # inside a Pulumi secret
    assert "tenant 'acme' in shared-tenants" in messages


def test_the_stock_prod_and_dev_stacks_pass_every_policy_once_their_placeholders_are_replaced(prod_plan, dev_plan):
    """The whole stock stacks (46 and 7 services) against the pack: the rules themselves are tested on a smaller
    plan in test_policy.py; this keeps the shipped files and the pack in step."""
    settings = load_pack_config()
    for plan in (prod_plan, dev_plan):
        ready = evaluate(plan.stack, config_overrides=deployable(plan.stack))
        assert run_policies(ready.resources, load_facts(plan.stack), settings) == [], plan.stack
        # The stock files as shipped: only what a first deploy must replace (tests/policy/test_readiness.py has
        # the detail)
        assert {v.policy for v in run_policies(plan.resources, load_facts(plan.stack), settings)} == {
            "no-placeholders", "alert-notifications-in-prod" if plan.stack == "prod" else "alert-notifications"}
