"""`fleet plan` and `fleet diff` show a rollout: per region the old and new revision and the split."""

from __future__ import annotations

import json
from typing import Any

from components.catalog import load_catalog
from fleet.diff import Diff, Side, endpoint_fields, render_markdown, render_text
from fleet.policy import Violation
from fleet.pricing import Traffic
from fleet.program import CLOUD_RUN, PROJECT_DIR, Plan, evaluate
from fleet.render import render_plan

NEW = "models/demo-raw.onnx"


def plan(rollout: dict[str, Any]) -> Plan:
    model = {"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["us-central1", "europe-west1"],
             "rollout": rollout}
    return evaluate("dev", config_overrides={"yolo-fleet:models": json.dumps([model])})


def template_revisions(p: Plan) -> dict[str, str]:
    return {r.name: r.inputs["template"]["revision"] for r in p.custom(CLOUD_RUN) if "revision" in r.inputs["template"]}


def test_plan_shows_old_and_new_revision_and_split_per_region() -> None:
    staged, canary = plan({"to": NEW, "regions": []}), plan({"to": NEW, "percent": 10, "regions": ["europe-west1"]})
    old, new = template_revisions(staged), template_revisions(canary)
    text = render_plan(canary, load_catalog(PROJECT_DIR / "regions.yaml"))
    assert "Revisions: 1 service(s) in a rollout wave" in text
    section = text.split("\nRevisions")[1].split("\n\n")[0].splitlines()
    line = next(row for row in section if row.startswith("demo-st-ghislain "))
    assert line.split()[1:] == ["europe-west1", old["demo-st-ghislain"], new["demo-st-ghislain"], "90%", "/", "10%",
                                "(canary)"]
    iowa = next(row for row in section if row.startswith("demo-iowa "))
    assert iowa.split()[1:] == ["us-central1", "-", old["demo-iowa"], "-", "/", "100%"]


def test_diff_names_the_traffic_change_of_a_wave_only() -> None:
    staged, canary = plan({"to": NEW, "regions": []}), plan({"to": NEW, "percent": 10, "regions": ["europe-west1"]})
    before = {r.name: endpoint_fields(r) for r in staged.custom(CLOUD_RUN)}
    after = {r.name: endpoint_fields(r) for r in canary.custom(CLOUD_RUN)}
    changed = {(name, f) for name in before for f in before[name] if before[name][f] != after[name][f]}
    assert changed == {("demo-st-ghislain", "revision"), ("demo-st-ghislain", "traffic")}
    old, new = before["demo-st-ghislain"]["revision"], after["demo-st-ghislain"]["revision"]
    assert before["demo-st-ghislain"]["traffic"] == f"100% {old}"
    assert after["demo-st-ghislain"]["traffic"] == f"90% {old} / 10% {new} (canary)"

    text = render_text(Diff("dev", "main", Side(before, [], [], []), Side(after, [], [], []), Traffic()))
    assert "1 changed (5 -> 5 Cloud Run services; 0 -> 0 resources in all)" in text
    assert "; 0 -> 1 service(s) in a model rollout wave" in text
    assert f"changed  demo-st-ghislain  traffic   100% {old} -> 90% {old} / 10% {new} (canary)" in text


def test_a_violation_whose_counts_changed_is_changed_not_resolved_and_new():
    """One more endpoint changes "in 80 resources" to "in 84": the placeholder project is neither resolved nor new."""
    old = Violation("no-placeholders", "mandatory", "server-image", "gcp:project 'my-project' is a placeholder (80 "
                    "resources)")
    new = Violation("no-placeholders", "mandatory", "server-image", "gcp:project 'my-project' is a placeholder (84 "
                    "resources)")
    cap = Violation("max-instances-cap", "mandatory", "demo-oregon", "max_instances 40 is over the cap 30")
    d = Diff("dev", "main", Side({}, [old], [], []), Side({}, [new, cap], [], []), Traffic())
    assert d.policy_rows() == [("new", cap), ("changed", new)]
    zeros = Violation("no-placeholders", "mandatory", "api-keys", "key digest 00000000...0000 is a placeholder")
    ones = Violation("no-placeholders", "mandatory", "api-keys", "key digest 11111111...1111 is a placeholder")
    d = Diff("dev", "main", Side({}, [zeros, ones], [], []), Side({}, [ones], [], []), Traffic())
    assert d.policy_rows() == [("still", ones), ("resolved", zeros)], "matched one to one, the exact one first"


def test_resources_beside_the_services_are_listed_when_added_or_removed():
    """A balancer switched on adds no endpoint, but hosts' certificates and backends a reviewer must see."""
    cert = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
    before = Side({}, [], [], [], {CLOUD_RUN: {"demo-iowa"}})
    after = Side({}, [], [], [], {CLOUD_RUN: {"demo-iowa"}, cert: {"lb-cert-demo", "lb-cert-demo-raw"}})
    d = Diff("dev", "main", before, after, Traffic())
    assert d.resource_rows() == [["added", "compute ManagedSslCertificate", "2", "lb-cert-demo, lb-cert-demo-raw"]]
    assert "(0 -> 0 Cloud Run services; 1 -> 3 resources in all)" in render_text(d)
    assert "| added | compute ManagedSslCertificate | 2 | lb-cert-demo, lb-cert-demo-raw |" in render_markdown(d)
    assert Diff("dev", "main", after, before, Traffic()).resource_rows()[0][:3] == [
        "removed", "compute ManagedSslCertificate", "2"]
