"""A lone request's CPU work runs on one CPU (onnxruntime's pool threads get the others); overlapping requests'
work runs anywhere; the thread gets its CPUs back afterwards, even when the work fails."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from inference_service.decode import OpenedImage
from inference_service.lanes import InferenceGate
from inference_service.letterbox import Letterbox
from inference_service.model import Model
from inference_service.params import parse_params
from inference_service.placement import on_one_cpu
from inference_service.predict_service import CpuWork
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
    work = CpuWork(InferenceGate(len(CPUS), adaptive=True), 50_000_000)
    image = sample_images()[0].read_bytes()
    params = parse_params({}, model.info, 1280)
    run = lambda: work.run(model, image, params, time.monotonic() + 30)  # noqa: E731
    in_thread(run)
    work._busy = 1  # another request is decoding or inferring meanwhile
    in_thread(run)
    assert seen == [{min(CPUS)}, CPUS]
    assert spares == [sorted(CPUS)[1], None]
