"""A lone request's CPU work runs on one CPU (onnxruntime's pool threads get the others); overlapping requests'
work runs anywhere; the thread gets its CPUs back afterwards, even when the work fails. A lone predict on an idle
server runs on the event loop itself."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference_service import predict_service
from inference_service.app import Settings, create_app
from inference_service.decode import OpenedImage, open_image
from inference_service.lanes import InferenceGate
from inference_service.letterbox import Letterbox
from inference_service.model import Model
from inference_service.params import parse_params
from inference_service.placement import on_one_cpu
from inference_service.predict_service import CpuWork, PredictService
from inference_service.telemetry import Metrics
from tests.helpers_server import demo_model, sample_images

CPUS = os.sched_getaffinity(0)
pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="one CPU: there is nothing to place")


def in_thread(fn: object) -> object:
    """``fn()`` in a fresh thread (a predict worker), so pinning never touches the test process's own thread."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))  # type: ignore[operator]
    t.start()
    t.join(30)
    return out[0]


def test_pinned_work_runs_on_the_lowest_cpu_and_gets_every_cpu_back() -> None:
    """The pinned block is offered the next CPU as its spare (the letterbox runs there while the JPEG decodes);
    an unpinned block has none, since other requests' work may run on any CPU."""
    def work() -> tuple[set[int], int | None, set[int], set[int], int | None]:
        with on_one_cpu(True) as spare:
            inside = os.sched_getaffinity(0)
        with on_one_cpu(False) as no_spare:
            unpinned = os.sched_getaffinity(0)
        return inside, spare, os.sched_getaffinity(0), unpinned, no_spare

    assert in_thread(work) == ({min(CPUS)}, sorted(CPUS)[1], CPUS, CPUS, None)


def test_the_cpus_come_back_when_the_work_fails() -> None:
    def work() -> set[int]:
        with pytest.raises(ValueError), on_one_cpu(True):
            raise ValueError("a bad image")
        return os.sched_getaffinity(0)

    assert in_thread(work) == CPUS


def test_a_lone_predict_infers_on_one_cpu_and_an_overlapping_one_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and only the lone one letterboxes on a spare CPU: an overlapping one's other CPU is busy with the other
    request."""
    model = Model(demo_model())
    seen: list[set[int]] = []
    spares: list[int | None] = []
    infer, preprocess = model.infer, model.preprocess

    def recording_preprocess(upload: OpenedImage, imgsz: tuple[int, int],
                             spare_cpu: int | None = None) -> tuple[np.ndarray, Letterbox]:
        spares.append(spare_cpu)
        return preprocess(upload, imgsz, spare_cpu)

    def recording_infer(tensor: np.ndarray, lane: bool = False) -> list[np.ndarray]:
        seen.append(os.sched_getaffinity(0))
        return infer(tensor, lane)

    monkeypatch.setattr(model, "infer", recording_infer)
    monkeypatch.setattr(model, "preprocess", recording_preprocess)
    work = CpuWork(InferenceGate(len(CPUS), adaptive=True))
    image = open_image(sample_images()[0].read_bytes(), 50_000_000)
    params = parse_params({}, model.info, 1280)
    run = lambda: work.run(model, image, params, time.monotonic() + 30)  # noqa: E731
    in_thread(run)
    work._busy = 1  # another request is decoding or inferring meanwhile
    in_thread(run)
    assert seen == [{min(CPUS)}, CPUS]
    assert spares == [sorted(CPUS)[1], None]


def test_a_short_lone_predict_on_an_idle_server_runs_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its CPU work skips the hop to a worker thread (predict_service.py), and the loop's thread gets every CPU back
    afterwards. A predict hops when another ended within the quiet time, while an inference a timed-out predict left
    still runs, when its inference should take longer than the limit (the last one scaled to the size asked), or its
    image is larger than the limit."""
    ran: list[tuple[bool, set[int]]] = []  # per predict: on the event loop?, the CPUs its thread has afterwards
    works: list[CpuWork] = []
    run = CpuWork.run

    def recording_run(self: CpuWork, *args: Any) -> Any:
        works.append(self)
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        result = run(self, *args)
        ran.append((on_loop, os.sched_getaffinity(0)))
        return result

    monkeypatch.setattr(CpuWork, "run", recording_run)
    monkeypatch.setattr(predict_service, "INLINE_MAX_INFERENCE_S", 1.0)  # the demo model, even on a loaded machine
    monkeypatch.setattr(predict_service, "INLINE_QUIET_S", 0.0)
    image = sample_images()[0].read_bytes()
    with TestClient(create_app(Settings(model_path=demo_model(), allow_anonymous=True))) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)

        def on_loop(**fields: str) -> bool:
            r = client.post("/predict", files={"file": ("a.jpg", image)}, data=fields)
            assert r.status_code == 200, r.text
            return ran[-1][0]

        assert on_loop()
        monkeypatch.setattr(predict_service, "INLINE_QUIET_S", 60.0)
        assert not on_loop()  # another predict ended within the quiet time
        monkeypatch.setattr(predict_service, "INLINE_QUIET_S", 0.0)
        works[0]._busy += 1  # an inference a timed-out predict left running in a worker
        assert not on_loop()
        works[0]._busy -= 1
        model = client.app.state.provider.model
        model.last_inference_ms = 50.0  # at the model's own 256 px: 1250 ms at 1280 px, 12.5 at 128
        assert not on_loop(imgsz="1280")
        model.last_inference_ms = 50.0
        assert on_loop(imgsz="128")
        monkeypatch.setattr(predict_service, "INLINE_MAX_PIXELS", 100)
        assert not on_loop()
        monkeypatch.setattr(predict_service, "INLINE_MAX_PIXELS", 4_000_000)
        monkeypatch.setattr(predict_service, "INLINE_MAX_INFERENCE_S", 0.0)
        assert not on_loop()
    assert all(cpus == CPUS for _, cpus in ran)


def test_a_predict_runs_on_the_event_loop_only_if_quick_against_the_request_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The 504 cannot interrupt work on the loop: a model whose inference takes 80 ms runs there under a 60 s
    request timeout, not under 0.5 s (more than a tenth of it)."""
    model = Model(demo_model())
    model.last_inference_ms = 80.0
    monkeypatch.setattr(predict_service, "INLINE_MAX_INFERENCE_S", 0.1)
    upload = open_image(sample_images()[0].read_bytes(), 50_000_000)

    async def on_loop(service: PredictService) -> bool:
        async with service.admission.slot():
            return service._runs_on_loop(model, upload, model.info.imgsz)

    for timeout, expected in ((60.0, True), (0.5, False)):
        service = PredictService(Settings(model_path=demo_model(), allow_anonymous=True, request_timeout=timeout),
                                 Metrics())
        assert asyncio.run(on_loop(service)) is expected, timeout
        service.close()
