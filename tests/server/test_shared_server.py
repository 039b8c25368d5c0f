"""Shared mode over loopback: two tenants in two regions, isolation, the redirect, bad paths, the cache bound,
the rate limit, a bad tenants file, and the official Ultralytics Platform client against it."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ultralytics_platform import Platform

from inference_service.auth import hash_key
from inference_service.registry import MEMORY_FACTOR
from tests.helpers_server import PYTHON, ROOT, demo_model, run_server

EU = "https://eu.inference.example.com"
KEYS = {"acme": "acme-key-1", "globex": "globex-key-1", "initech": "initech-key-1"}
REGIONS = {"acme": "us-central1", "globex": "europe-west1", "initech": "us-central1"}
SHARED_REGIONS = "us-central1,europe-west1,asia-east1"  # what the plan gives the stock catalog's shared services


def write_tenants(path: Path, regions: dict[str, str]) -> Path:
    lines = ["tenants:"]
    for owner, region in regions.items():
        lines += [f"  {owner}:", f"    data_region: {region}", f"    key_sha256: [{hash_key(KEYS[owner])}]"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """models/ with acme's and globex's demo, a second acme model, a corrupt one, a symlink out; tenants.yaml."""
    base = tmp_path_factory.mktemp("shared")
    models = base / "models"
    for rel in ("acme/shapes/demo.onnx", "acme/other/demo.onnx", "globex/shapes/demo.onnx"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_model("e2e"), models / rel)
    (models / "acme/broken").mkdir()
    (models / "acme/broken/bad.onnx").write_bytes(b"not an onnx file\x00" * 64)
    shutil.copy(demo_model("e2e"), base / "outside.onnx")  # a real model no request may reach
    (models / "acme/link").mkdir()
    (models / "acme/link/demo.onnx").symlink_to(base / "outside.onnx")
    return models, write_tenants(base / "tenants.yaml", REGIONS)


def shared_args(layout: tuple[Path, Path], *extra: str) -> list[str]:
    models, tenants = layout
    return ["--mode", "shared", "--models-dir", str(models), "--tenants-file", str(tenants), "--region",
            "us-central1", "--shared-regions", SHARED_REGIONS, "--peer", f"europe-west1={EU}", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def server(layout: tuple[Path, Path]) -> Iterator[str]:
    with run_server(shared_args(layout)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def image() -> bytes:
    return sorted((ROOT / "models" / "samples").glob("shapes-*"))[0].read_bytes()


def predict(url: str, owner: str, path: str, key: str | None, image: bytes, **data: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/api/models/{owner}/{path}/predict", headers=headers, files={"file": image},
                      data=data, timeout=30)


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples (all label values) from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_model_info_route_checks_like_predict(server: str) -> None:
    """The Test page reads a tenant model's facts (end-to-end or not) through the predict route's checks."""
    def info(owner: str, path: str, key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{server}/api/models/{owner}/{path}/info", headers=headers, timeout=30)

    facts = info("acme", "shapes/demo", KEYS["acme"])
    assert facts.status_code == 200 and facts.json()["end2end"] is True and facts.json()["task"] == "detect"
    assert info("acme", "shapes/demo", None).status_code == 401
    assert info("globex", "shapes/demo", KEYS["acme"]).status_code == 403
    assert info("acme", "shapes/missing", KEYS["acme"]).status_code == 404
    moved = info("globex", "shapes/demo", KEYS["globex"])
    assert moved.status_code == 307 and moved.headers["location"] == f"{EU}/api/models/globex/shapes/demo/info"
    assert httpx.get(f"{server}/info").json()["mode"] == "shared"


def test_tenant_gets_the_reference_response(server: str, image: bytes) -> None:
    r = predict(server, "acme", "shapes/demo", KEYS["acme"], image)
    assert r.status_code == 200, r.text
    body = r.json()
    img = body["images"][0]
    assert len(img["shape"]) == 2 and set(img["speed"]) == {"preprocess", "inference", "postprocess"}
    assert img["results"] and {"name", "class", "confidence", "box"} <= set(img["results"][0])
    assert body["metadata"]["model"] == "demo" and body["metadata"]["task"] == "detect"
    assert body["metadata"]["imageCount"] == 1 and body["metadata"]["classNames"]


def test_official_client_unchanged(server: str, image: bytes) -> None:
    with Platform(api_key=KEYS["acme"], base_url=server) as client:
        out = client.models.predict("acme", "shapes", "demo", body={"file": ("s.jpg", image), "conf": 0.5})
    direct = predict(server, "acme", "shapes/demo", KEYS["acme"], image, conf="0.5").json()
    assert out["images"][0]["results"] == direct["images"][0]["results"]
    assert out["metadata"]["model"] == "demo"


def test_another_tenants_key_is_forbidden(server: str, image: bytes) -> None:
    r = predict(server, "acme", "shapes/demo", KEYS["globex"], image)
    assert r.status_code == 403 and "acme" in r.json()["error"]


def test_tenant_of_another_region_is_redirected_to_its_peer(server: str, image: bytes) -> None:
    r = predict(server, "globex", "shapes/demo", KEYS["globex"], image, conf="0.4")
    assert r.status_code == 307
    assert r.headers["location"] == f"{EU}/api/models/globex/shapes/demo/predict"
    assert "europe-west1" in r.json()["error"]
    with Platform(api_key=KEYS["globex"], base_url=server) as client:  # it follows no redirect: returns the body
        out = client.models.predict("globex", "shapes", "demo", body={"file": ("s.jpg", image)})
    assert "images" not in out and f"{EU}/api/models/globex/shapes/demo/predict" in out["error"]


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401(server: str, image: bytes, key: str | None) -> None:
    r = predict(server, "acme", "shapes/demo", key, image)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["error"]


@pytest.mark.parametrize("path", ["shapes/nope", "nope/demo"])
def test_unknown_model_is_404(server: str, image: bytes, path: str) -> None:
    r = predict(server, "acme", path, KEYS["acme"], image)
    assert r.status_code == 404 and "not found" in r.json()["error"]


@pytest.mark.parametrize("path", [
    "/api/models/acme/%2e%2e/demo/predict",
    "/api/models/acme/../acme/shapes/demo/predict",
    "/api/models/acme/shapes/%2e%2e/predict",
    "/api/models/acme/%2e%2e/%2e%2e%2foutside/predict",
    "/api/models/acme/sh%00apes/demo/predict",
    "/api/models/acme/shapes/de%20mo/predict",
    "/api/models/acme/shapes/.hidden/predict",
    "/api/models/acme/link/demo/predict",  # a symlink to a model outside the models dir
])
def test_path_tricks_are_4xx_and_read_nothing_outside(server: str, image: bytes, path: str) -> None:
    loads = metric(server, "model_cold_loads_total")
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)  # sends the path as is, no normalising
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.jpg\"\r\n\r\n".encode()
            + image + f"\r\n--{boundary}--\r\n".encode())
    conn.request("POST", path, body, {"Authorization": f"Bearer {KEYS['acme']}",
                                      "Content-Type": f"multipart/form-data; boundary={boundary}"})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    assert 400 <= resp.status < 500, (resp.status, text)
    assert '"error"' in text
    assert metric(server, "model_cold_loads_total") == loads  # nothing was loaded


def test_corrupt_model_is_a_clear_error_and_others_keep_being_served(server: str, image: bytes) -> None:
    r = predict(server, "acme", "broken/bad", KEYS["acme"], image)
    assert r.status_code == 424 and "acme/broken/bad" in r.json()["error"]
    assert predict(server, "acme", "shapes/demo", KEYS["acme"], image).status_code == 200
    assert httpx.get(f"{server}/health").json()["healthy"] is True
    assert metric(server, "model_ready") == 1, "/metrics says what /health says"


def test_dedicated_paths_serve_no_model_in_shared_mode(server: str, image: bytes) -> None:
    r = httpx.post(f"{server}/predict", files={"file": image}, timeout=30)
    assert r.status_code == 404 and "/api/models/" in r.json()["error"]


def test_cache_holds_what_fits_and_counts_cold_loads(layout: tuple[Path, Path], image: bytes) -> None:
    one_model_mb = demo_model("e2e").stat().st_size * MEMORY_FACTOR / 2**20
    with run_server(shared_args(layout, "--cache-mb", f"{one_model_mb * 1.5:.2f}")) as (url, _):
        for n, path in enumerate(["shapes/demo", "other/demo", "shapes/demo", "other/demo"], 1):
            assert predict(url, "acme", path, KEYS["acme"], image).status_code == 200
            assert metric(url, "model_cache_models") == 1
            assert metric(url, "model_cache_bytes") <= metric(url, "model_cache_limit_bytes")
            assert metric(url, "model_cold_loads_total") == n
        assert predict(url, "acme", "other/demo", KEYS["acme"], image).status_code == 200  # warm: no new load
        assert metric(url, "model_cold_loads_total") == 4
        assert metric(url, "model_cache_evictions_total") == 3


def test_rate_limit_is_per_tenant_with_retry_after(layout: tuple[Path, Path], image: bytes) -> None:
    with run_server(shared_args(layout, "--rate-limit-rps", "0.2", "--rate-limit-burst", "2")) as (url, _):
        assert [predict(url, "acme", "shapes/demo", KEYS["acme"], image).status_code for _ in range(2)] == [200, 200]
        r = predict(url, "acme", "shapes/demo", KEYS["acme"], image)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 5 and "acme" in r.json()["error"]
        assert predict(url, "initech", "any/model", KEYS["initech"], image).status_code == 404  # not limited


def test_tenant_in_a_region_outside_the_three_stops_startup(layout: tuple[Path, Path], tmp_path: Path) -> None:
    bad = write_tenants(tmp_path / "tenants.yaml", {**REGIONS, "globex": "us-east1"})
    args = shared_args((layout[0], bad))
    proc = subprocess.run([PYTHON, "-m", "inference_service", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert "'globex'" in proc.stderr and "data_region" in proc.stderr and "us-east1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_configured_by_environment_as_cloud_run_does(layout: tuple[Path, Path], image: bytes) -> None:
    models, tenants = layout
    env = {"MODE": "shared", "MODELS_DIR": str(models), "TENANTS_FILE": str(tenants), "REGION": "europe-west1",
           "SHARED_REGIONS": SHARED_REGIONS,
           "PEERS": "us-central1=https://us.inference.example.com,asia-east1=https://ap.inference.example.com"}
    with run_server(["--threads", "1"], env=env) as (url, _):
        assert predict(url, "globex", "shapes/demo", KEYS["globex"], image).status_code == 200
        r = predict(url, "acme", "shapes/demo", KEYS["acme"], image)
        assert r.status_code == 307
        assert r.headers["location"] == "https://us.inference.example.com/api/models/acme/shapes/demo/predict"


@pytest.mark.parametrize(("flags", "message"), [
    (["--region", "us-east1"], "not a shared region"),
    (["--peer", "europe-west1"], "REGION_ID=URL"),
    (["--peer", "mars-1=https://x"], "REGION_ID=URL"),
])
def test_bad_shared_flags_exit_2(layout: tuple[Path, Path], flags: list[str], message: str) -> None:
    proc = subprocess.run([PYTHON, "-m", "inference_service", *shared_args(layout), *flags], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_redirect_location_is_served_by_the_peer_region(layout: tuple[Path, Path], image: bytes) -> None:
    """Two regions on loopback: the US answers globex with the EU's URL, the EU serves it there; no peer is 503."""
    models, tenants = layout
    eu_args = ["--mode", "shared", "--models-dir", str(models), "--tenants-file", str(tenants), "--region",
               "europe-west1", "--shared-regions", SHARED_REGIONS, "--threads", "1"]
    with run_server(eu_args) as (eu, _):
        us_args = [*shared_args(layout)[:-4], "--peer", f"europe-west1={eu}", "--threads", "1"]
        with run_server(us_args) as (us, _):
            r = predict(us, "globex", "shapes/demo", KEYS["globex"], image)
            assert r.status_code == 307 and r.headers["location"].startswith(eu)
            resent = httpx.post(r.headers["location"], headers={"Authorization": f"Bearer {KEYS['globex']}"},
                                files={"file": image}, timeout=30)
            assert resent.status_code == 200 and resent.json()["images"][0]["results"]
            no_peer = predict(eu, "acme", "shapes/demo", KEYS["acme"], image)  # the EU was given no US peer
            assert no_peer.status_code == 503 and "us-central1" in no_peer.json()["error"]


def test_only_peer_regions_pages_may_call_from_a_browser(server: str, image: bytes) -> None:
    """CORS: the Test page on a peer region's host, sent here by a 307, may resend with its key (preflight allowed,
    answers readable); a page on any other origin may not (no allow headers: the browser blocks it)."""
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    path = f"{server}/api/models/acme/shapes/demo/predict"
    allowed = httpx.options(path, headers={"Origin": EU, **preflight}, timeout=10)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == EU
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    answer = httpx.post(path, headers={"Origin": EU, "Authorization": f"Bearer {KEYS['acme']}"}, files={"file": image},
                        timeout=30)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == EU
    other = "https://evil.example.net"
    refused = httpx.options(path, headers={"Origin": other, **preflight}, timeout=10)
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    foreign = httpx.post(path, headers={"Origin": other, "Authorization": f"Bearer {KEYS['acme']}"},
                         files={"file": image}, timeout=30)
    assert "access-control-allow-origin" not in foreign.headers  # served, but the browser hides the answer


def test_tenants_file_changes_apply_without_restart(layout: tuple[Path, Path], tmp_path: Path, image: bytes) -> None:
    tenants = write_tenants(tmp_path / "tenants.yaml", {"globex": "us-central1"})
    with run_server(shared_args((layout[0], tenants), "--secrets-recheck-seconds", "0")) as (url, _):
        assert predict(url, "acme", "shapes/demo", KEYS["acme"], image).status_code == 401
        write_tenants(tenants, {"globex": "us-central1", "acme": "us-central1"})  # a new secret version
        assert predict(url, "acme", "shapes/demo", KEYS["acme"], image).status_code == 200
        tenants.write_text("tenants: {acme: {data_region: mars-1}}\n")  # a broken version: keep the old
        assert predict(url, "acme", "shapes/demo", KEYS["acme"], image).status_code == 200


def test_a_segment_with_a_trailing_newline_is_not_a_name() -> None:
    """`demo%0a` decodes to "demo\\n": it must not pass as the segment "demo"."""
    from inference_service.tenancy import safe_segment

    assert safe_segment("demo") and not safe_segment("demo\n") and not safe_segment("demo\n.onnx")


def test_openapi_describes_the_tenant_predict_form(server: str) -> None:
    """Clients generated from /openapi.json must see the same form on the shared route as on the dedicated one."""
    spec = httpx.get(f"{server}/openapi.json", timeout=10).json()
    body = spec["paths"]["/api/models/{owner}/{project}/{model}/predict"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and {"conf", "iou", "imgsz", "normalize", "decimals"} <= set(form["properties"])
