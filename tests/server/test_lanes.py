"""Adaptive inference: every thread for a lone request, one-thread lanes when requests overlap."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from inference_service.decode import open_image
from inference_service.lanes import InferenceGate
from inference_service.model import Model
from tests.helpers_server import demo_model, run_server, sample_images


def hold(gate: InferenceGate, alone: bool, inside: threading.Event, release: threading.Event, out: list) -> None:
    with gate.turn(alone) as lane:
        out.append(lane)
        inside.set()
        release.wait(5)


def start(gate: InferenceGate, alone: bool) -> tuple[threading.Event, threading.Event, list, threading.Thread]:
    inside, release, out = threading.Event(), threading.Event(), []
    t = threading.Thread(target=hold, args=(gate, alone, inside, release, out))
    t.start()
    return inside, release, out, t


def test_a_lone_request_gets_the_full_session_and_overlapping_ones_wait_for_it() -> None:
    gate = InferenceGate(2, adaptive=True)
    inside, release, out, t = start(gate, alone=True)
    assert inside.wait(5) and out == [False]  # the full session
    inside2, release2, out2, t2 = start(gate, alone=False)
    assert not inside2.wait(0.2)  # every token is taken: the overlap waits...
    release.set()
    assert inside2.wait(5) and out2 == [True]  # ...then runs in a one-thread lane
    release2.set()
    t.join(), t2.join()


def test_overlapping_requests_run_one_lane_per_token_at_once() -> None:
    gate = InferenceGate(2, adaptive=True)
    first, second, third = (start(gate, alone=False) for _ in range(3))
    assert first[0].wait(5) and second[0].wait(5) and first[2] == second[2] == [True]
    assert not third[0].wait(0.2)  # two tokens, two lanes
    first[1].set()
    assert third[0].wait(5) and third[2] == [True]
    # a request that finds itself alone while lanes are busy does not wait for every token: it takes a lane
    lone = start(gate, alone=True)
    assert not lone[0].wait(0.2)
    second[1].set()
    assert lone[0].wait(5) and lone[2] == [True]
    for _, release, _, t in (first, second, third, lone):
        release.set()
        t.join()


def test_fixed_workers_share_one_session() -> None:
    gate = InferenceGate(2, adaptive=False)
    a, b = start(gate, alone=True), start(gate, alone=True)
    assert a[0].wait(5) and b[0].wait(5) and a[2] == b[2] == [False]
    for _, release, _, t in (a, b):
        release.set()
        t.join()
    assert InferenceGate(1, adaptive=True).adaptive is False  # one thread: nothing to split


def test_lane_session_detects_what_the_full_session_detects() -> None:
    model = Model(demo_model("e2e"), intra_op_threads=2)
    assert model.lane_session is None  # loaded after the model is ready, not before
    model.open_lane()
    assert model.lane_session is not None
    assert model.lane_session.get_session_options().intra_op_num_threads == 1
    image = open_image(next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes(), 10**8)
    tensor, _ = model.preprocess(image, model.info.imgsz)
    full, lane = model.infer(tensor)[0], model.infer(tensor, lane=True)[0]
    np.testing.assert_allclose(lane, full, rtol=1e-4, atol=1e-3)
    single = Model(demo_model("e2e"), intra_op_threads=1)
    single.open_lane()
    assert single.lane_session is None  # one thread: the full session is the lane already


def test_server_is_adaptive_by_default_and_overlapping_predicts_agree(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    sample = next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes()
    with (run_server(["--model", str(demo_model("e2e")), "--allow-anonymous", "--threads", "2"], log_path=log)
          as (url, _), httpx.Client(base_url=url, timeout=30) as client):
        def predict(_: int) -> list[dict]:
            r = client.post("/predict", files={"file": ("s.jpg", sample, "image/jpeg")}, data={"decimals": "3"})
            assert r.status_code == 200, r.text
            return r.json()["images"][0]["results"]

        alone = predict(0)
        deadline = time.monotonic() + 20
        while "one-thread lane session for overlapping requests loaded" not in log.read_text():
            assert time.monotonic() < deadline, "the lane session never loaded"
            time.sleep(0.05)
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(predict, range(8)))
    assert "inference=adaptive (2 threads alone, up to 2 x 1 thread under load)" in log.read_text()
    assert alone
    for results in together:
        assert [r["name"] for r in results] == [r["name"] for r in alone]
        for got, want in zip(results, alone, strict=True):
            assert abs(got["confidence"] - want["confidence"]) <= 0.002
            assert all(abs(got["box"][k] - want["box"][k]) <= 0.5 for k in want["box"])
