"""A shared region added to the catalog is served: the plan gives its service the catalog's shared regions, and a
real server started with exactly that environment (its mounts under a temporary directory) serves a tenant there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fleet.program import evaluate
from tests.conftest import deployable, prod_in
from tests.helpers_server import ROOT, demo_model, run_server

NEW_REGION = "me-west1"  # Tel Aviv: the middle-east geography has no shared region in the stock catalog
KEYS = {"levant": "levant-key", "northwind": "northwind-key"}


def shared_service(plan: Any, region: str) -> dict[str, Any]:
    return next(r.inputs for r in plan.custom("gcp:cloudrunv2/service:Service")
                if r.inputs["location"] == region and r.inputs["template"]["labels"]["role"] == "shared")


def planned_tenants_file(plan: Any) -> str:
    """The tenants file the plan stores in Secret Manager, which every shared service mounts."""
    return next(r.inputs["secretData"]["value"] for r in plan.custom("gcp:secretmanager/secretVersion:SecretVersion")
                if r.name.endswith("-tenants"))


def test_a_fourth_shared_region_from_the_catalog_serves_its_tenants(
        write_catalog: Callable[..., Path], tmp_path: Path) -> None:
    catalog = write_catalog(lambda data: data["shared"]["regions"].append(NEW_REGION))
    tenants = {"levant": {"data_region": NEW_REGION, "key_sha256": [hashlib.sha256(b"levant-key").hexdigest()]},
               "northwind": {"data_region": "us-central1",
                             "key_sha256": [hashlib.sha256(b"northwind-key").hexdigest()]}}
    plan = evaluate("prod", catalog=catalog, config_overrides={**deployable("prod"), **prod_in(),
                                                              "yolo-fleet:tenants": json.dumps(tenants)})
    service = shared_service(plan, NEW_REGION)
    env = {e["name"]: e["value"] for e in service["template"]["containers"][0]["envs"]}
    assert env["REGION"] == NEW_REGION
    assert env["SHARED_REGIONS"].split(",") == ["us-central1", "europe-west1", "asia-east1", NEW_REGION]

    # What Cloud Run mounts (the region's bucket, the tenants secret) lives under tmp_path instead of /.
    mounted = {k: str(tmp_path / v.lstrip("/")) if v.startswith("/") else v for k, v in env.items()}
    model = Path(mounted["MODELS_DIR"]) / "levant" / "shapes" / "demo.onnx"
    model.parent.mkdir(parents=True)
    shutil.copy(demo_model("e2e"), model)
    Path(mounted["TENANTS_FILE"]).parent.mkdir(parents=True)
    Path(mounted["TENANTS_FILE"]).write_text(planned_tenants_file(plan))
    image = (ROOT / "models" / "samples" / "shapes-1.jpg").read_bytes()
    with run_server(["--threads", "1"], env=mounted) as (url, _):  # one thread: this machine's CPUs are shared
        def predict(owner: str) -> httpx.Response:
            return httpx.post(f"{url}/api/models/{owner}/shapes/demo/predict", files={"file": image},
                              headers={"Authorization": f"Bearer {KEYS[owner]}"}, timeout=30)

        served = predict("levant")
        assert served.status_code == 200, served.text
        assert served.json()["images"][0]["results"]
        assert httpx.get(f"{url}/info", timeout=5).json()["region"] == NEW_REGION
        moved = predict("northwind")  # its data lives in us-central1: sent to that region's host from the plan
        assert moved.status_code == 307
        assert moved.headers["location"] == ("https://us.inference-prod.northwind-vision.io"
                                             "/api/models/northwind/shapes/demo/predict")
