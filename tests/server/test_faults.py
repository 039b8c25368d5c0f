"""Faults against real server processes: SIGTERM drain, slow clients, overload, timeouts, model files that change
under a running server, and the capacity the deployed container is told."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fleet.program import CLOUD_RUN, Plan
from inference_service import predict_service
from inference_service.app import Settings, create_app
from tests.helpers_server import BOUNDARY, demo_model, multipart, run_server, sample_images, write_key_file
from tests.server.test_shared_server import KEYS, predict, write_tenants

DRAIN_S = 2  # --drain-seconds of the SIGTERM test: the mechanism, without waiting out the default 8 s
CLOUD_RUN_GRACE_S = 10  # Cloud Run sends SIGKILL this long after SIGTERM


@pytest.fixture(scope="module")
def image() -> bytes:
    return next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes()


def request_head(path: str, body_length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {body_length}\r\n\r\n").encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def dedicated(*extra: str) -> list[str]:
    return ["--model", str(demo_model("e2e")), "--allow-anonymous", "--threads", "1", *extra]


def test_sigterm_drains_in_flight_requests_then_exits_0_within_the_drain(image: bytes, tmp_path: Path) -> None:
    """Cloud Run sends SIGTERM, then SIGKILL 10 s later: requests in flight finish with 200, new connections are
    refused, and the process is gone once the drain ends even with a client that never finishes its request (a
    2 s drain here; the default leaves 2 s of Cloud Run's 10 for the exit)."""
    assert Settings.model_fields["drain_seconds"].default + 2 <= CLOUD_RUN_GRACE_S
    body = multipart([(b"file", b"s.jpg", image)])
    log = tmp_path / "server.log"
    with run_server(dedicated("--drain-seconds", str(DRAIN_S)), log_path=log) as (url, proc):
        in_flight = [connect(url) for _ in range(3)]
        for sock in in_flight:  # headers and half the body: the server is reading these requests
            sock.sendall(request_head("/predict", len(body)) + body[: len(body) // 2])
        stuck = connect(url)
        stuck.sendall(request_head("/predict", len(body)) + body[:10])
        time.sleep(0.3)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        refused = False
        while not refused and time.monotonic() - signalled < 3:
            try:
                connect(url).close()
                time.sleep(0.05)
            except ConnectionRefusedError:
                refused = True
        assert refused, "the server still accepted new connections after SIGTERM"
        for sock in in_flight:
            sock.sendall(body[len(body) // 2:])
        for sock in in_flight:
            status, _, payload = read_response(sock)
            assert status == 200, payload
            assert json.loads(payload)["images"][0]["results"]
            assert sock.recv(1) == b""  # closed after the answer: no new request on a draining server
        proc.wait(timeout=DRAIN_S + 10)
        exited = time.monotonic() - signalled
        stuck.close()
    assert proc.returncode == 0
    assert DRAIN_S <= exited < DRAIN_S + 2, f"exited {exited:.1f} s after SIGTERM, not as its {DRAIN_S} s drain ends"
    assert f"draining 4 in-flight request(s) for up to {DRAIN_S} s" in log.read_text()


def trickle(socks: list[socket.socket], payloads: list[bytes], seconds: float) -> None:
    """Send one byte per connection every 0.2 s (slowloris) for ``seconds``."""
    end = time.monotonic() + seconds
    for sent in range(int(seconds / 0.2)):
        for sock, payload in zip(socks, payloads, strict=True):
            sock.send(payload[sent: sent + 1])
        time.sleep(max(0.0, min(0.2, end - time.monotonic())))


def test_slow_clients_do_not_block_others_and_get_408(image: bytes) -> None:
    """30 connections trickle their headers and 20 their bodies (more than concurrency + queue): normal predicts
    are answered meanwhile, and each slow connection gets 408 once the request timeout has passed since its first
    byte, however recently it sent one. (The trickle stops just before: bytes sent to a closed socket make the
    kernel reset the connection, and the client would see the reset, not the 408.)"""
    timeout = 2.0
    body = multipart([(b"file", b"s.jpg", image)])
    with run_server(dedicated("--request-timeout", str(timeout), "--max-concurrency", "2", "--max-queue", "2")) as (
            url, _):
        slow_headers = [connect(url) for _ in range(30)]
        slow_bodies = [connect(url) for _ in range(20)]
        for sock in slow_bodies:
            sock.sendall(request_head("/predict", len(body)))
        payloads = [request_head("/predict", len(body))] * 30 + [body] * 20
        started = time.monotonic()
        trickler = threading.Thread(target=trickle, args=(slow_headers + slow_bodies, payloads, timeout - 0.4))
        trickler.start()
        try:
            time.sleep(0.2)
            for _ in range(3):
                r = httpx.post(f"{url}/predict", files={"file": image}, timeout=30)
                assert r.status_code == 200, r.text
            assert trickler.is_alive(), "the normal predicts should have been served while the trickle went on"
            trickler.join()
            for sock, what in [(s, "headers") for s in slow_headers] + [(s, "body") for s in slow_bodies]:
                status, headers, payload = read_response(sock)
                assert status == 408, payload
                assert headers["connection"] == "close"
                assert f"request {what} did not arrive within the 2 s request timeout" in json.loads(payload)["error"]
                assert sock.recv(1) == b""  # and the server closed the connection
            # a deadline reset by each byte would answer 2 s after the last one, 1.6 s after the trickle started
            assert time.monotonic() - started < timeout + 1.2, "trickling bytes kept slow connections open"
        finally:
            trickler.join()
            for sock in slow_headers + slow_bodies:
                sock.close()


def test_a_blank_line_starts_the_header_deadline_and_oversized_headers_get_431() -> None:
    """A connection that sends only a blank line (which the HTTP parser skips without starting a request) gets 408
    and is closed at the request timeout instead of being kept open; a request line and headers past 16 KiB get
    431 and a close at once; headers just under the limit are served."""
    with run_server(dedicated("--request-timeout", "1")) as (url, _):
        blank, big = connect(url), connect(url)
        blank.sendall(b"\r\n")
        started = time.monotonic()
        big.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000)
        status, headers, payload = read_response(big)
        assert (status, headers["connection"]) == (431, "close")
        assert json.loads(payload)["error"] == "request headers are over the 16 KiB limit"
        assert big.recv(1) == b""
        status, headers, payload = read_response(blank)
        assert (status, headers["connection"]) == (408, "close")
        assert "request headers did not arrive within the 1 s request timeout" in json.loads(payload)["error"]
        assert blank.recv(1) == b"" and time.monotonic() - started < 3
        assert httpx.get(f"{url}/health", headers={"X-Big": "a" * 15_000}).status_code == 200


def test_a_request_answered_before_its_body_arrived_leaves_the_connection_usable(tmp_path: Path) -> None:
    """A predict with a wrong key is answered 401 before its 300 KB body is read; the rest of that body is still
    read as body (not as the next request's headers, which would be over the 16 KiB limit), and the next request on
    the same keep-alive connection is served."""
    _, key_file = write_key_file(tmp_path)
    body = b"x" * 300_000
    with run_server(["--model", str(demo_model("e2e")), "--api-key-file", str(key_file)]) as (url, _):
        sock = connect(url)
        head = request_head("/predict", len(body)).replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer wrong\r\n\r\n")
        sock.sendall(head + body)
        status, _, _ = read_response(sock)
        assert status == 401
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, payload = read_response(sock)
        assert status == 200 and json.loads(payload)["healthy"] is True and headers.get("connection") != "close"
        sock.close()


def test_a_burst_of_32_clients_is_served_with_the_default_flags(image: bytes) -> None:
    """32 clients at once, 3 predicts each, against the default 4 turns: they queue for well under the default
    5 s wait limit, so none is refused (a count of 4 running + 8 waiting refused most of them)."""
    with run_server(dedicated()) as (url, _), \
            httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as client:

        def three(_: int) -> list[int]:
            return [client.post(f"{url}/predict", files={"file": image}).status_code for _ in range(3)]

        with ThreadPoolExecutor(32) as pool:
            codes = [code for codes in pool.map(three, range(32)) for code in codes]
        metrics = client.get(f"{url}/metrics").text
    assert codes == [200] * 96
    assert "predict_shed_total 0.0" in metrics and "predict_max_wait_seconds 5.0" in metrics


def test_overload_is_shed_at_once_with_retry_after(image: bytes, tmp_path: Path) -> None:
    """Beyond 1 running + 1 waiting (the hard bound on waiting), predicts are refused with 503 and a Retry-After
    from the expected wait without waiting their turn; the others are answered; no connection is dropped;
    refusals are logged as warnings, not errors."""
    log = tmp_path / "server.log"
    with run_server(dedicated("--max-concurrency", "1", "--max-queue", "1"), log_path=log) as (url, _), \
            httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as client:

        def timed_predict(_: int) -> tuple[httpx.Response, float]:
            start = time.monotonic()
            r = client.post(f"{url}/predict", files={"file": image}, data={"imgsz": "1024"})
            return r, time.monotonic() - start

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(timed_predict, range(16)))
        metrics = client.get(f"{url}/metrics").text
    shed = [(r, s) for r, s in results if r.status_code == 503]
    served = [(r, s) for r, s in results if r.status_code == 200]
    assert len(shed) + len(served) == 16, [r.status_code for r, _ in results]
    assert shed and served
    for r, _ in shed:
        retry = int(r.headers["retry-after"])
        assert retry >= 1 and r.json()["field"] is None
        assert re.fullmatch(r"server is at capacity: [01] predicts running and 1 waiting, about [0-9.]+ s of work "
                            rf"ahead of a new one \(allowed: 5 s, 1 waiting\); retry in {retry} s", r.json()["error"])
    assert sorted(s for _, s in shed)[len(shed) // 2] < max(s for _, s in served), "shed requests waited their turn"
    assert f"predict_shed_total {float(len(shed))}" in metrics
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused = [e for e in entries if e["message"].startswith("POST /predict 503")]
    assert len(refused) == len(shed) and {e["severity"] for e in refused} == {"WARNING"}


def test_inference_past_the_request_timeout_is_a_504_and_the_server_recovers(image: bytes,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A predict in a worker thread. (A short lone predict runs on the event loop, which no timeout interrupts; the
    rule takes a model of at most a tenth of the timeout, so only a stall of 10x or more answers late there.)"""
    monkeypatch.setattr(predict_service, "INLINE_MAX_INFERENCE_S", 0.0)
    settings = Settings(model_path=demo_model("e2e"), allow_anonymous=True, ort_threads=1, request_timeout=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        model = client.app.state.provider.model
        fast_infer = model.infer

        def stuck_infer(tensor, **options):  # a model that suddenly needs 1.5 s, e.g. a starved CPU
            time.sleep(1.5)
            return fast_infer(tensor, **options)

        model.infer = stuck_infer
        start = time.monotonic()
        r = client.post("/predict", files={"file": image})
        answered = time.monotonic() - start
        model.infer = fast_infer
        assert r.status_code == 504
        assert r.json() == {"error": "no result within the 1 s request timeout: the server is busier than it can "
                            "answer in time; retry later", "field": None}
        assert answered < 1.5, "the client was held until inference ended, past its timeout"
        assert client.get("/health").status_code == 200
        time.sleep(0.6)  # the stuck inference ends in its thread
        assert client.post("/predict", files={"file": image}).status_code == 200


def test_dedicated_model_file_removed_or_corrupted_after_start_keeps_serving(image: bytes, tmp_path: Path) -> None:
    """The session holds the whole model in memory: the file is read once, at start."""
    path = tmp_path / "model.onnx"
    shutil.copy(demo_model("e2e"), path)
    with run_server(["--model", str(path), "--allow-anonymous", "--threads", "1"]) as (url, _):
        expected = httpx.post(f"{url}/predict", files={"file": image}, timeout=30).json()["images"][0]["results"]
        path.unlink()
        r = httpx.post(f"{url}/predict", files={"file": image}, timeout=30)
        assert r.status_code == 200 and r.json()["images"][0]["results"] == expected
        path.write_bytes(b"garbage\x00" * 1000)
        r = httpx.post(f"{url}/predict", files={"file": image}, timeout=30)
        assert r.status_code == 200 and r.json()["images"][0]["results"] == expected
        assert httpx.get(f"{url}/health").json()["healthy"] is True


@pytest.fixture
def shared_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    models = tmp_path / "models"
    for rel in ("acme/shapes/demo.onnx", "acme/other/demo.onnx", "initech/shapes/demo.onnx"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_model("e2e"), models / rel)
    tenants = write_tenants(tmp_path / "tenants.yaml", {"acme": "us-central1", "initech": "us-central1"})
    args = ["--mode", "shared", "--models-dir", str(models), "--tenants-file", str(tenants), "--region",
            "us-central1", "--shared-regions", "us-central1", "--threads", "1"]
    with run_server(args) as (url, _):
        yield url, models


def test_shared_tenant_model_removed_or_corrupted_is_theirs_alone(shared_server: tuple[str, Path],
                                                                   image: bytes) -> None:
    """A tenant's file that disappears or turns to garbage after it was served (or before its first load) is a
    404/424 for that model; re-uploading it is picked up; the other tenant is served at every step."""
    url, models = shared_server

    def other_tenant_served() -> bool:
        return predict(url, "initech", "shapes/demo", KEYS["initech"], image).status_code == 200

    def acme(path: str) -> httpx.Response:
        return predict(url, "acme", path, KEYS["acme"], image)

    assert acme("shapes/demo").status_code == 200 and acme("other/demo").status_code == 200  # both cached
    (models / "acme/shapes/demo.onnx").unlink()
    r = acme("shapes/demo")
    assert r.status_code == 404 and "acme/shapes/demo" in r.json()["error"]
    assert other_tenant_served()
    (models / "acme/other/demo.onnx").write_bytes(b"not an onnx file\x00" * 64)
    r = acme("other/demo")
    assert r.status_code == 424 and "re-upload" in r.json()["error"]
    assert other_tenant_served()
    (models / "acme/late").mkdir()
    (models / "acme/late/demo.onnx").write_bytes(b"\x08\x07garbage")  # corrupt before its first load
    assert acme("late/demo").status_code == 424
    assert other_tenant_served()
    shutil.copy(demo_model("e2e"), models / "acme/other/demo.onnx")  # the tenant re-uploads
    assert acme("other/demo").status_code == 200
    assert httpx.get(f"{url}/health").json()["healthy"] is True


def test_the_container_is_told_its_cloud_run_concurrency_and_timeout(dev_plan: Plan) -> None:
    """So the server's admission limit and deadline match what Cloud Run enforces in front of it."""
    services = dev_plan.custom(CLOUD_RUN)
    assert services
    for service in services:
        template = service.inputs["template"]
        envs = {e["name"]: e["value"] for e in template["containers"][0]["envs"]}
        assert int(envs["MAX_CONCURRENCY"]) == template["maxInstanceRequestConcurrency"]
        assert envs["REQUEST_TIMEOUT"] + "s" == template["timeout"]
