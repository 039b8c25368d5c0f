"""Revision names come from what makes a revision (components/revisions.py), and a model entry's rollout puts a
traffic split on exactly its wave's services: checked on the real program's plan under mocks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from components.errors import FleetError
from components.revisions import CANARY_TAG, MAX_REVISION_NAME, REVISION_TRAFFIC, image_content
from fleet.program import Plan, evaluate

OLD, NEW = "models/demo-e2e.onnx", "models/demo-raw.onnx"
REGIONS = ["us-central1", "europe-west1", "asia-northeast1"]
CANARY = "europe-west1"
SERVICE = "gcp:cloudrunv2/service:Service"


def plan(file: str = OLD, rollout: dict[str, Any] | None = None, **extra: Any) -> Plan:
    """The dev stack with one model, `demo`, in three regions."""
    model: dict[str, Any] = {"name": "demo", "file": file, "regions": REGIONS}
    if rollout is not None:
        model["rollout"] = rollout
    overrides = {"yolo-fleet:models": json.dumps([model]), **{f"yolo-fleet:{k}": v for k, v in extra.items()}}
    return evaluate("dev", config_overrides=overrides)


def services(p: Plan) -> dict[str, tuple[str, list[tuple[str, int, str | None]]]]:
    """Dedicated service (by region) -> its template's revision and its traffic (revision, percent, tag)."""
    out = {}
    for r in p.resources:
        if r.type == SERVICE and r.inputs["labels"]["role"] == "dedicated":
            assert all(t["type"] == REVISION_TRAFFIC for t in r.inputs["traffics"])
            out[r.inputs["location"]] = (r.inputs["template"]["revision"],
                                         [(t["revision"], int(t["percent"]), t.get("tag"))
                                          for t in r.inputs["traffics"]])
    return out


def test_names_are_stable_valid_and_all_traffic_goes_to_the_planned_revision() -> None:
    first, again = services(plan()), services(plan())
    assert first == again
    for r in plan().resources:
        if r.type == SERVICE and r.inputs["labels"]["role"] == "dedicated":
            name = r.inputs["template"]["revision"]
            assert re.fullmatch(re.escape(r.inputs["name"]) + r"-[0-9a-f]{12}", name)
            assert len(name) <= MAX_REVISION_NAME
            assert services(plan())[r.inputs["location"]][1] == [(name, 100, None)]
    assert len({rev for rev, _ in first.values()}) == len(REGIONS)  # one per service, never shared


def test_a_new_model_file_or_setting_is_a_new_revision() -> None:
    old, new = services(plan()), services(plan(NEW))
    assert all(old[r][0] != new[r][0] for r in REGIONS)
    bigger = services(plan(settings=json.dumps({"cpu": 2, "memory": "4Gi"})))
    assert all(old[r][0] != bigger[r][0] for r in REGIONS)


def test_each_wave_splits_only_its_regions_between_the_staged_and_the_new_revision() -> None:
    staged = services(plan(rollout={"to": NEW, "percent": 0, "regions": []}))
    before = services(plan())
    # Staging puts the new file in the image: every service gets a new revision of its unchanged model, no split.
    assert all(staged[r][0] != before[r][0] and staged[r][1] == [(staged[r][0], 100, None)] for r in REGIONS)

    canary = services(plan(rollout={"to": NEW, "percent": 10, "regions": [CANARY]}))
    new_rev = canary[CANARY][0]
    assert new_rev != staged[CANARY][0]
    assert canary[CANARY][1] == [(staged[CANARY][0], 90, None), (new_rev, 10, CANARY_TAG)]
    assert all(canary[r] == staged[r] for r in REGIONS if r != CANARY)  # the others are untouched

    full = services(plan(rollout={"to": NEW, "percent": 100, "regions": [CANARY, "us-central1"]}))
    assert full[CANARY] == (new_rev, [(staged[CANARY][0], 0, None), (new_rev, 100, CANARY_TAG)])
    assert full["us-central1"][1] == [(staged["us-central1"][0], 0, None), (full["us-central1"][0], 100, CANARY_TAG)]
    assert full["asia-northeast1"] == staged["asia-northeast1"]


def test_the_image_identity_follows_code_and_models(tmp_path: Path) -> None:
    (tmp_path / "inference_service").mkdir()
    (tmp_path / "models").mkdir()
    code, model = tmp_path / "inference_service" / "app.py", tmp_path / "models" / "m.onnx"
    code.write_text("v1")
    model.write_bytes(b"a")
    first = image_content(tmp_path, ["models/m.onnx"], None, gpu=False)
    assert first == image_content(tmp_path, ["./models/m.onnx"], None, gpu=False)
    assert first.version("models/m.onnx").server == {"model_path": "/app/models/m.onnx"}
    assert image_content(tmp_path, ["models/m.onnx"], None, gpu=True).identity != first.identity
    (tmp_path / "inference_service" / "__pycache__").mkdir()
    (tmp_path / "inference_service" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    image_content.__globals__["code_fingerprint"].cache_clear()
    assert image_content(tmp_path, ["models/m.onnx"], None, gpu=False) == first  # not a build input
    code.write_text("v2")
    image_content.__globals__["code_fingerprint"].cache_clear()
    assert image_content(tmp_path, ["models/m.onnx"], None, gpu=False).identity != first.identity
    prebuilt = "us-docker.pkg.dev/p/r/i@sha256:" + "a" * 64
    assert image_content(tmp_path, ["models/m.onnx"], prebuilt, gpu=False).identity == prebuilt


def test_a_prebuilt_image_names_revisions_by_its_digest() -> None:
    one = services(plan(image="us-docker.pkg.dev/p/r/i@sha256:" + "a" * 64))
    assert one == services(plan(image="us-docker.pkg.dev/p/r/i@sha256:" + "a" * 64))
    two = services(plan(image="us-docker.pkg.dev/p/r/i@sha256:" + "b" * 64))
    assert all(one[r][0] != two[r][0] for r in REGIONS)


@pytest.mark.parametrize(("rollout", "message"), [
    ({"to": NEW, "percent": 10, "regions": ["us-east1"]},
     "Pulumi.dev.yaml: models[demo].rollout.regions: us-east1 not among the model's regions"),
    ({"to": OLD, "percent": 10, "regions": [CANARY]},
     "Pulumi.dev.yaml: models[demo]: rollout.to: 'models/demo-e2e.onnx' is already the model's file"),
    ({"to": "models/nope.onnx", "percent": 10, "regions": [CANARY]},
     "Pulumi.dev.yaml: models[demo].rollout.to: 'models/nope.onnx' not found in the repository"),
    ({"to": NEW, "percent": 101, "regions": [CANARY]}, "models[demo].rollout.percent"),
])
def test_a_bad_rollout_stops_the_plan_naming_the_field(rollout: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetError, match=re.escape(message)):
        plan(rollout=rollout)
