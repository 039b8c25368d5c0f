"""The Google APIs a stack needs come from its plan: every resource type and data source maps to its API, and
`fleet apis` / `fleet plan` print them (the README's deploy steps run `fleet apis`).
"""

from __future__ import annotations

import json

import pytest

from fleet.apis import APIS_BY_TYPE, apis_for, required_apis
from fleet.cli import main
from fleet.mocks import RecordedResource
from fleet.program import PROJECT_DIR, Plan, evaluate

# Stack variants whose plans hold resource types the stock stacks may not: a prebuilt image (no build, no
# repositories), notification channels, SLOs off, a GPU service.
VARIANTS = {
    "prebuilt image": ("dev", {"yolo-fleet:image": "us-docker.pkg.dev/p/r/server@sha256:" + "ab" * 32}),
    "notification channels": ("dev", {"yolo-fleet:notification_channels": json.dumps(
        [{"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@corp.test"}}])}),
    "slo": ("dev", {"yolo-fleet:slo": json.dumps({"enabled": True})}),
    "gpu": ("prod", {"yolo-fleet:models": json.dumps([{"name": "demo", "file": "models/demo-e2e.onnx",
                                                       "regions": ["us-central1"], "settings": {
                                                           "gpu": True, "cpu": 4, "memory": "16Gi",
                                                           "cpu_idle": False}}])}),
}


@pytest.fixture(scope="module")
def variant_plans() -> dict[str, Plan]:
    return {name: evaluate(stack, config_overrides=overrides) for name, (stack, overrides) in VARIANTS.items()}


def test_every_planned_resource_type_and_data_source_has_its_api(prod_plan, dev_plan, variant_plans):
    plans = [prod_plan, dev_plan, *variant_plans.values()]
    tokens = {r.type for plan in plans for r in plan.custom()} | {t for plan in plans for t in plan.invokes}
    assert "gcp:organizations/getProject:getProject" in tokens  # data sources are part of the plan too
    assert [t for t in sorted(tokens) if apis_for(t) is None] == [], "add these to APIS_BY_TYPE in fleet/apis.py"
    assert {"gcp:monitoring/notificationChannel:NotificationChannel", "gcp:monitoring/slo:Slo"} <= tokens


def test_a_type_the_table_does_not_know_is_reported_not_dropped(dev_plan, capsys):
    odd = Plan("dev", [*dev_plan.resources, RecordedResource("gcp:bigquery/dataset:Dataset", "d", {}, True)],
               dev_plan.outputs, [*dev_plan.invokes, "gcp:dns/getManagedZone:getManagedZone"])
    apis, unknown = required_apis(odd)
    assert unknown == ["gcp:bigquery/dataset:Dataset", "gcp:dns/getManagedZone:getManagedZone"]
    assert apis == required_apis(dev_plan)[0]


def test_prefixes_match_whole_module_names_and_the_longest_entry_wins():
    assert apis_for("gcp:compute/uRLMap:URLMap") == ("compute.googleapis.com",)
    assert apis_for("gcp:computeengine/x:X") is None  # not gcp:compute
    assert apis_for("gcp:organizations/getProject:getProject") == ("cloudresourcemanager.googleapis.com",)
    assert apis_for("gcp:organizations/folder:Folder") is None  # only the listed data sources of that module
    assert apis_for("gcp:projects/iAMMember:IAMMember") == ("cloudresourcemanager.googleapis.com", "iam.googleapis.com")


def test_the_stock_prod_stack_needs_the_apis_its_resources_use(prod_plan):
    apis, unknown = required_apis(prod_plan)
    assert unknown == []
    assert apis == ["artifactregistry.googleapis.com", "cloudresourcemanager.googleapis.com", "compute.googleapis.com",
                    "iam.googleapis.com", "monitoring.googleapis.com", "run.googleapis.com",
                    "secretmanager.googleapis.com", "storage.googleapis.com"]


def test_what_a_stack_declares_decides_its_apis(variant_plans, dev_plan):
    prebuilt = required_apis(variant_plans["prebuilt image"])[0]
    assert "artifactregistry.googleapis.com" not in prebuilt  # no repository, no push
    assert "artifactregistry.googleapis.com" in required_apis(dev_plan)[0]


def test_fleet_apis_prints_the_gcloud_line_for_the_stack_project(capsys):
    assert main(["apis", "--stack", "dev"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("gcloud services enable ") and line.endswith(" --project my-gcp-project-dev")
    assert line.split()[3:-2] == required_apis(evaluate("dev"))[0]
    assert main(["apis", "--stack", "dev", "--project", "acme-vision-2741"]) == 0
    assert capsys.readouterr().out.strip().endswith("--project acme-vision-2741")


def test_fleet_apis_exits_1_and_says_so_when_a_type_is_unknown(monkeypatch, capsys):
    monkeypatch.delitem(APIS_BY_TYPE, "gcp:storage")  # as if the table lacked storage
    assert main(["apis", "--stack", "dev"]) == 1
    captured = capsys.readouterr()
    assert "storage.googleapis.com" not in captured.out
    assert "no Google API known for gcp:storage/bucket:Bucket, gcp:storage/bucketIAMMember:BucketIAMMember" \
           in captured.err and "fleet/apis.py" in captured.err


def test_fleet_plan_lists_the_apis(capsys):
    assert main(["plan", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    section = out.split("Google APIs the stack uses (8; ")[1].split("\n\n")[0]
    assert "`fleet apis --stack prod` prints the gcloud line" in section
    assert [line.strip() for line in section.splitlines()[1:]] == required_apis(evaluate("prod"))[0]


def test_the_readme_enables_apis_with_fleet_apis_not_a_hand_written_list():
    readme = (PROJECT_DIR / "README.md").read_text()
    deploy = readme.split("## Deploying for real")[1].split("\n## ")[0]
    assert "fleet apis --stack prod" in deploy
    assert "gcloud services enable run.googleapis.com" not in readme


@pytest.mark.parametrize("given", ["x; echo pwned", "My_Project", ""])
def test_a_project_that_is_not_a_project_id_is_one_line_before_the_plan(monkeypatch, capsys, given: str):
    """Its line is pasted into a shell: a --project that is not a project id never reaches it."""
    monkeypatch.setattr("fleet.apis.evaluate", lambda *_, **__: pytest.fail("the plan ran"))
    assert main(["apis", "--stack", "dev", "--project", given]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"fleet apis: --project {given!r}: not a Google Cloud project id (6-30 lowercase letters, digits and "
        "hyphens, starting with a letter)\n")
