"""The HTTP API in-process (TestClient): wire format, auth, health, metrics, logs and every kind of bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import anyio.to_thread
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from ultralytics_platform import types as platform_types

from inference_service.__main__ import parse_args
from inference_service.app import Settings, create_app
from inference_service.telemetry import JsonFormatter, trace_fields
from tests.helpers_server import PYTHON, ROOT, demo_model, encode, sample_images, write_key_file

MAX_BODY = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def key_and_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return write_key_file(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def client(key_and_file: tuple[str, Path]) -> Iterator[TestClient]:
    settings = Settings(model_path=demo_model("e2e"), model_name="demo", api_key_file=key_and_file[1],
                        max_upload_mb=MAX_BODY / 2**20, max_pixels=50_000_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 30
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield c


@pytest.fixture(scope="module")
def auth(key_and_file: tuple[str, Path]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_and_file[0]}"}


@pytest.fixture(scope="module")
def sample() -> bytes:
    return next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes()


def check_typed(value: object, hint: object, path: str = "$") -> None:
    """Assert ``value`` fits a TypedDict/typing hint from the official client's ``types`` module."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.is_typeddict(hint):
        assert isinstance(value, dict), path
        hints = typing.get_type_hints(hint, include_extras=True)
        for key, sub in hints.items():
            required = typing.get_origin(sub) is not typing.NotRequired
            if typing.get_origin(sub) is typing.NotRequired:
                sub = typing.get_args(sub)[0]
            if key in value:
                check_typed(value[key], sub, f"{path}.{key}")
            else:
                assert not required, f"{path}.{key} missing"
    elif origin is list:
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            check_typed(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict), path
        for k, v in value.items():
            check_typed(k, args[0], f"{path} key")
            check_typed(v, args[1], f"{path}.{k}")
    elif origin is typing.Literal:
        assert value in args, f"{path}: {value!r} not in {args}"
    elif origin in (typing.Union, __import__("types").UnionType):
        errors = []
        for option in args:
            try:
                check_typed(value, option, path)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(f"{path}: {value!r} fits none of {args}: {errors}")
    elif hint is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: {value!r} is not a number"
    elif hint is type(None):
        assert value is None, path
    else:
        assert isinstance(value, hint), f"{path}: {value!r} is not {hint}"  # type: ignore[arg-type]


def test_predict_response_matches_the_reference(client: TestClient, auth: dict[str, str], sample: bytes) -> None:
    r = client.post("/predict", files={"file": ("s.jpg", sample, "image/jpeg")}, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"images", "metadata"}
    [image] = body["images"]
    assert set(image) == {"shape", "speed", "results"}
    h, w = Image.open(sample_images()[2]).size[::-1]
    assert image["shape"] == [h, w] and all(isinstance(v, int) for v in image["shape"])
    assert set(image["speed"]) == {"preprocess", "inference", "postprocess"}
    assert all(isinstance(v, float) and v >= 0 for v in image["speed"].values())
    assert image["results"], "the demo model finds shapes in its own samples"
    for det in image["results"]:
        assert set(det) == {"name", "class", "confidence", "box"}
        assert isinstance(det["name"], str) and isinstance(det["class"], int) and isinstance(det["confidence"], float)
        assert set(det["box"]) == {"x1", "y1", "x2", "y2"}
        assert 0 <= det["box"]["x1"] < det["box"]["x2"] <= w and 0 <= det["box"]["y1"] < det["box"]["y2"] <= h
        assert det["confidence"] > 0.25 and det["name"] in {"circle", "square", "triangle"}
    meta = body["metadata"]
    assert meta["imageCount"] == 1 and meta["model"] == "demo" and meta["task"] == "detect"
    assert meta["classNames"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert isinstance(meta["functionTimeCall"], float) and meta["functionTimeCall"] >= image["speed"]["inference"]
    assert set(meta["version"]) == {"server"} and isinstance(meta["version"]["server"], str)
    # and field for field against the official client's response type (its classNames is typed as a list
    # while the reference shows {"0": name}; we follow the reference)
    meta_for_client = {k: v for k, v in meta.items() if k != "classNames"}
    check_typed({**body, "metadata": meta_for_client}, platform_types.DeploymentsPredictResponse)


def test_deployment_path_serves_the_same_handler(client: TestClient, auth: dict[str, str], sample: bytes) -> None:
    a = client.post("/predict", files={"file": sample}, data={"conf": "0.3"}, headers=auth).json()
    b = client.post("/api/deployments/acme/demo-iowa/predict", files={"file": sample}, data={"conf": "0.3"},
                    headers=auth).json()
    assert a["images"][0]["results"] == b["images"][0]["results"]


def test_normalize_decimals_and_conf(client: TestClient, auth: dict[str, str], sample: bytes) -> None:
    px = client.post("/predict", files={"file": sample}, data={"conf": "0.1"}, headers=auth).json()["images"][0]
    norm = client.post("/predict", files={"file": sample}, headers=auth,
                       data={"conf": "0.1", "normalize": "true", "decimals": "3"}).json()["images"][0]
    h, w = px["shape"]
    assert len(px["results"]) == len(norm["results"]) > 0
    for a, b in zip(px["results"], norm["results"], strict=True):
        assert b["box"]["x2"] == pytest.approx(a["box"]["x2"] / w, abs=6e-4)
        assert b["box"]["y2"] == pytest.approx(a["box"]["y2"] / h, abs=6e-4)
        assert b["confidence"] == pytest.approx(a["confidence"], abs=6e-4)
        assert all(v == round(v, 3) for v in [*b["box"].values(), b["confidence"]])
        assert all(0 <= v <= 1 for v in b["box"].values())
    strict = client.post("/predict", files={"file": sample}, data={"conf": "0.6"}, headers=auth).json()["images"][0]
    assert len(strict["results"]) < len(px["results"])
    assert all(d["confidence"] > 0.6 for d in strict["results"])


def test_health_and_deployment_health_need_no_key(client: TestClient) -> None:
    for path in ("/health", "/api/deployments/acme/demo-iowa/health"):
        body = client.get(path).json()
        assert body["healthy"] is True and body["status"] == "ready" and body["error"] is None
        assert isinstance(body["latencyMs"], float) and body["latencyMs"] > 0


def test_health_answers_while_every_worker_thread_is_taken(client: TestClient) -> None:
    """Cloud Run's probes get an answer while blocking work (shared mode's model loads, the Test page's files)
    holds every thread of the app's pool: /health waits for none."""
    limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
    tokens, borrower = limiter.total_tokens, object()

    async def take_every_thread() -> None:
        limiter.total_tokens = 1
        await limiter.acquire_on_behalf_of(borrower)

    async def give_back() -> None:
        limiter.release_on_behalf_of(borrower)
        limiter.total_tokens = tokens

    client.portal.call(take_every_thread)
    pool = ThreadPoolExecutor(1)
    try:
        probe = pool.submit(client.get, "/health")
        answered, _ = wait([probe], timeout=10)
    finally:
        client.portal.call(give_back)
        pool.shutdown()
    assert answered and probe.result().status_code == 200


def test_health_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with TestClient(create_app(Settings(model_path=broken, allow_anonymous=True))) as c:
        deadline = time.monotonic() + 10
        while (body := c.get("/health").json())["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/health")
        assert r.status_code == 503 and body["healthy"] is False and body["status"] == "failed" and body["error"]
        p = c.post("/predict", files={"file": b"x"})
        assert p.status_code == 503 and "failed to load" in p.json()["error"]


@pytest.mark.parametrize("wait_ready", [False, True], ids=["model-loading", "lane-loading"])
def test_a_process_stopped_while_the_model_loads_exits_cleanly(wait_ready: bool) -> None:
    """Stopped while the model, or after it the one-thread lane session, loads: the process still exits 0, not 134
    (onnxruntime aborts the process when a daemon thread is torn down inside a session's constructor)."""
    script = ("import time\nfrom pathlib import Path\nfrom fastapi.testclient import TestClient\n"
              "from inference_service.app import Settings, create_app\n"
              f"app = create_app(Settings(model_path=Path({str(demo_model('e2e'))!r}), allow_anonymous=True))\n"
              "with TestClient(app) as c:\n"
              f"    while {wait_ready} and c.get('/health').status_code != 200:\n"
              "        time.sleep(0.02)\n")
    r = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong-key"}, 401), ({"Authorization": "Basic abc"}, 401),
     ({"Authorization": "Bearer "}, 401)],
    ids=["no-key", "bad-key", "wrong-scheme", "empty-key"],
)
def test_auth_refuses_missing_and_wrong_keys(client: TestClient, sample: bytes, headers: dict, status: int) -> None:
    r = client.post("/predict", files={"file": sample}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"] and r.headers["www-authenticate"] == "Bearer"


def test_auth_accepts_every_listed_key(client: TestClient, sample: bytes) -> None:
    r = client.post("/predict", files={"file": sample}, headers={"Authorization": "Bearer another-key"})
    assert r.status_code == 200


def test_key_file_rotation_is_picked_up(key_and_file: tuple[str, Path], sample: bytes, tmp_path: Path) -> None:
    key, path = write_key_file(tmp_path)
    settings = Settings(model_path=demo_model("e2e"), api_key_file=path, secrets_recheck_seconds=0)
    with TestClient(create_app(settings)) as c:
        while c.get("/health").status_code != 200:
            time.sleep(0.05)
        assert c.post("/predict", files={"file": sample}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        path.write_text("# rotated: the old key is gone\n" + "0" * 64 + "\n")
        later = time.time() + 5
        import os

        os.utime(path, (later, later))
        assert c.post("/predict", files={"file": sample}, headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_anonymous_needs_an_explicit_flag() -> None:
    with pytest.raises(ValueError, match="API key file is required"):
        create_app(Settings(model_path=Path("m.onnx")))


def bomb_png() -> bytes:
    """30000 x 30000 pixels in ~100 kB: the header says 900 MP."""
    data = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(data) < 1_000_000
    return data


def truncated_png() -> bytes:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    return encode(noise, "PNG")[:20000]


PAYLOADS = {"truncated": truncated_png, "bomb": bomb_png}  # made by the case that sends them: the bomb takes ~1 s
BAD_INPUTS = {
    "zero-byte": ({"file": ("e.jpg", b"", "image/jpeg")}, {}, 422, "file", "empty"),
    "truncated": ({"file": ("t.png", None, "image/png")}, {}, 422, "file", "could not be decoded"),
    "not-an-image": ({"file": ("notes.txt", b"some text\n" * 20, "text/plain")}, {}, 422, "file", "not a supported"),
    "bomb": ({"file": ("bomb.png", None, "image/png")}, {}, 422, "file", "MP"),
    "unknown-field": ({"file": None}, {"colour": "red"}, 422, "colour", "unknown form field"),
    "conf-above-1": ({"file": None}, {"conf": "1.5"}, 422, "conf", "between 0 and 1"),
    "conf-negative": ({"file": None}, {"conf": "-0.2"}, 422, "conf", "between 0 and 1"),
    "conf-text": ({"file": None}, {"conf": "high"}, 422, "conf", "number"),
    "iou-above-1": ({"file": None}, {"iou": "7"}, 422, "iou", "between 0 and 1"),
    "imgsz-not-stride": ({"file": None}, {"imgsz": "250"}, 422, "imgsz", "multiple of the model stride 32"),
    "imgsz-huge": ({"file": None}, {"imgsz": "32000"}, 422, "imgsz", "between"),
    "source-url": ({}, {"source": "http://169.254.169.254/latest"}, 422, "source", "not supported"),
    "no-file": ({}, {"conf": "0.5"}, 422, "file", "missing image"),
    "file-as-text": ({}, {"file": "abc"}, 422, "file", "file part"),
    "second-file": ({"file": None, "other": ("o.jpg", b"x", "image/jpeg")}, {}, 422, "other", "unexpected file"),
    "vid-stride": ({"file": None}, {"vid_stride": "2"}, 422, "vid_stride", "video"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_a_json_4xx_and_the_server_keeps_serving(client: TestClient, auth: dict[str, str],
                                                              sample: bytes, case: str) -> None:
    files, data, status, field, message = BAD_INPUTS[case]
    files = {k: (v if v is not None else ("s.jpg", sample, "image/jpeg")) for k, v in files.items()}
    files = {k: (v[0], PAYLOADS[case](), v[2]) if v[1] is None else v for k, v in files.items()}
    r = client.post("/predict", files=files or None, data=data, headers=auth)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and message in r.json()["error"]
    ok = client.post("/predict", files={"file": sample}, headers=auth)
    assert ok.status_code == 200 and ok.json()["images"][0]["results"]


def test_upload_over_the_cap_is_413(client: TestClient, auth: dict[str, str], sample: bytes) -> None:
    big = b"\xff\xd8\xff" + b"\0" * (MAX_BODY + 10)
    r = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")}, headers=auth)
    assert r.status_code == 413 and "MiB limit" in r.json()["error"]
    assert client.post("/predict", files={"file": sample}, headers=auth).status_code == 200


def test_streamed_upload_without_length_over_the_cap_is_413(client: TestClient, auth: dict[str, str]) -> None:
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'.encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536

    r = client.post("/predict", content=chunks(), headers={**auth,
                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413


def test_unknown_paths_and_methods_are_json(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]
    assert client.get("/predict").status_code == 405


def test_metrics_count_requests_by_status_and_time_inference(client: TestClient, auth: dict[str, str],
                                                             sample: bytes) -> None:
    client.post("/predict", files={"file": sample}, headers=auth)
    client.post("/predict", files={"file": sample})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'http_requests_total{method="POST",route="/predict",status="401"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.1",route="/predict"}' in text
    assert 'inference_stage_seconds_count{stage="inference"}' in text
    assert "model_ready 1.0" in text


def test_json_logs_carry_severity_http_request_and_trace(client: TestClient, auth: dict[str, str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inference_service")
    client.post("/predict", files={"file": b""}, headers={**auth, "X-Cloud-Trace-Context": "abc123/456;o=1"})
    record = next(r for r in caplog.records if "POST /predict" in r.getMessage())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "WARNING"
    assert entry["httpRequest"]["status"] == 422 and entry["httpRequest"]["requestMethod"] == "POST"
    assert entry["httpRequest"]["latency"].endswith("s")
    assert entry["logging.googleapis.com/trace"].endswith("abc123")
    assert entry["logging.googleapis.com/spanId"] == "456"
    assert auth["Authorization"].split()[1] not in json.dumps(entry)  # never log a key


def test_trace_fields_read_w3c_traceparent() -> None:
    fields = trace_fields({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "proj")
    assert fields["logging.googleapis.com/trace"] == "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert fields["logging.googleapis.com/trace_sampled"] is True


def test_test_page_and_samples_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/info").json()
    assert info["authRequired"] is True and info["samples"] and info["model"] == "demo"
    assert client.get(f"/samples/{info['samples'][0]}").status_code == 200
    assert client.get("/samples/..%2F..%2Fpyproject.toml").status_code == 404


@pytest.mark.parametrize("samples_env", [True, False])
def test_samples_dir_from_the_environment_serves_samples_for_a_model_anywhere(
        tmp_path: Path, key_and_file: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, samples_env: bool) -> None:
    """The image sets SAMPLES_DIR, so a model at /app/weights/x.onnx still offers models/samples/ on the Test page."""
    model = tmp_path / "weights" / "demo.onnx"
    model.parent.mkdir()
    model.write_bytes(demo_model("e2e").read_bytes())
    samples = demo_model("e2e").parent / "samples"
    if samples_env:
        monkeypatch.setenv("SAMPLES_DIR", str(samples))
    args = parse_args(["--model", str(model), "--api-key-file", str(key_and_file[1])])
    settings = Settings(model_path=model, api_key_file=key_and_file[1], samples_dir=args.settings.samples_dir)
    with TestClient(create_app(settings)) as c:
        listed = c.get("/info").json()["samples"]
    assert listed == (sorted(p.name for p in samples.iterdir()) if samples_env else [])
