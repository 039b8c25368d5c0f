"""The real entry point over loopback HTTP, called by the official Ultralytics Platform client."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from ultralytics_platform import APIError, Platform

from tests.helpers_server import ROOT, demo_model, run_server, sample_images, write_key_file


def test_official_client_predicts_over_loopback(tmp_path: Path) -> None:
    key, key_file = write_key_file(tmp_path)
    log = tmp_path / "server.log"
    sample = next(p for p in sample_images() if p.name.startswith("shapes-"))
    with run_server(["--model", str(demo_model("e2e")), "--api-key-file", str(key_file)], log_path=log) as (url, _):
        client = Platform(api_key=key, base_url=url)
        with sample.open("rb") as f:
            body = client.deployments.predict("acme", "demo-iowa", body={"file": f, "conf": 0.25, "normalize": True})
        results = body["images"][0]["results"]
        assert results and all(0 <= r["box"]["x2"] <= 1 for r in results)
        with pytest.raises(APIError) as err, sample.open("rb") as f:
            Platform(api_key="wrong", base_url=url).deployments.predict("acme", "demo-iowa", body={"file": f})
        assert err.value.status_code == 401
        assert httpx.get(f"{url}/api/deployments/acme/demo-iowa/health").json()["healthy"] is True
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("httpRequest", {}).get("status") == 200 for e in lines)
    assert key not in log.read_text()


def test_cli_refuses_to_start_without_keys() -> None:
    r = subprocess.run([sys.executable, "-m", "inference_service", "--model", str(demo_model("e2e"))],
                       capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "--allow-anonymous" in r.stderr


def test_cli_refuses_zero_inference_workers() -> None:
    r = subprocess.run([sys.executable, "-m", "inference_service", "--model", str(demo_model("e2e")),
                        "--allow-anonymous", "--inference-workers", "0"],
                       capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "--inference-workers" in r.stderr and "Traceback" not in r.stderr


def test_inference_workers_split_the_threads_and_answer_concurrently(tmp_path: Path) -> None:
    """``--inference-workers 2 --threads 2``: two inferences of one thread each (the log says so), and concurrent
    predicts all answer with the same boxes as one at a time."""
    log = tmp_path / "server.log"
    sample = next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes()
    args = ["--model", str(demo_model("e2e")), "--allow-anonymous", "--inference-workers", "2", "--threads", "2"]
    with run_server(args, log_path=log) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        def predict(_: int) -> list[dict]:
            r = client.post("/predict", files={"file": ("s.jpg", sample, "image/jpeg")})
            assert r.status_code == 200, r.text
            return r.json()["images"][0]["results"]

        alone = predict(0)
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(predict, range(8)))
    assert alone and all(results == alone for results in together)
    assert "inference=2 x 1 thread(s)" in log.read_text()
