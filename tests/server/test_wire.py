"""The JSON a client gets back: ``results`` as ultralytics ``Results.summary`` gives them (the independent oracle),
and the body around them (shape, speed, metadata) with its timings in rounded milliseconds."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from ultralytics.engine.results import Results

from inference_service import __version__, wire
from inference_service.model import ModelInfo
from inference_service.postprocess import Detections
from inference_service.wire import predict_body, summarize

NAMES = {0: "person", 1: "bicycle", 2: "car"}


def detections(rng: np.random.Generator, n: int, shape: tuple[int, int], kpt_dims: int | None) -> Detections:
    """Random detections in pixels of an ``shape`` (h, w) image, scores and coordinates with many decimals."""
    h, w = shape
    xy = rng.uniform(0, [w, h], (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, [w / 2, h / 2], (n, 2))], 1).astype(np.float32)
    kpts = None
    if kpt_dims is not None:
        kpts = rng.uniform(0, [w, h, 1][:kpt_dims], (n, 5, kpt_dims)).astype(np.float32)
    return Detections(boxes=boxes, scores=rng.uniform(0.25, 1, n).astype(np.float32),
                      classes=rng.integers(0, len(NAMES), n).astype(np.int64), keypoints=kpts)


def ultralytics_summary(det: Detections, shape: tuple[int, int], normalize: bool, decimals: int) -> list[dict]:
    """What ultralytics answers for the same detections: ``Results.summary`` on its own Boxes/Keypoints."""
    rows = np.concatenate([det.boxes, det.scores[:, None], det.classes[:, None].astype(np.float32)], 1)
    kpts = None if det.keypoints is None else torch.from_numpy(det.keypoints)
    result = Results(np.zeros((*shape, 3), np.uint8), path="", names=NAMES, boxes=torch.from_numpy(rows),
                     keypoints=kpts)
    return result.summary(normalize=normalize, decimals=decimals)


@pytest.mark.parametrize("kpt_dims", [None, 2, 3], ids=["boxes", "keypoints-xy", "keypoints-visible"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("decimals", [0, 2, 5])
def test_results_are_ultralytics_summary(kpt_dims: int | None, normalize: bool, decimals: int) -> None:
    """Wide (x over width) and tall images, so swapping width and height, or x and y, changes the numbers."""
    rng = np.random.default_rng(decimals * 7 + normalize)
    for shape in [(480, 1280), (1000, 300)]:
        det = detections(rng, 6, shape, kpt_dims)
        assert summarize(det, NAMES, shape, normalize, decimals) == ultralytics_summary(det, shape, normalize,
                                                                                        decimals)


def test_no_detections_is_an_empty_list() -> None:
    det = detections(np.random.default_rng(0), 0, (10, 10), None)
    assert summarize(det, NAMES, (10, 10), True, 5) == []


def test_a_class_the_metadata_does_not_name_is_named_by_its_number() -> None:
    """A model whose metadata names fewer classes than it predicts still answers (ultralytics raises KeyError)."""
    det = Detections(boxes=np.array([[1, 2, 3, 4]], np.float32), scores=np.array([0.5], np.float32),
                     classes=np.array([7]))
    [item] = summarize(det, NAMES, (10, 10), False, 5)
    assert (item["name"], item["class"]) == ("7", 7)


INFO = ModelInfo(name="yolo26n.onnx", task="detect", names={0: "person", 5: "bus"}, stride=32, imgsz=(640, 640),
                 end2end=True, dynamic=True, kpt_shape=None)


def test_body_around_the_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape is (height, width); speeds and call/alive times are milliseconds with two decimals."""
    before = time.perf_counter()  # everything after this may be late by at most took_ms (a GC pause, preemption)
    monkeypatch.setattr(wire, "STARTED", time.time() - 12.345678)
    results = [{"name": "bus", "class": 5}]
    started = before - 1.234567
    body = predict_body(INFO, (1080, 810), results, {"preprocess": 4.56789, "inference": 20.004, "postprocess": 0.5},
                        started)
    took_ms = (time.perf_counter() - before) * 1000
    assert body["images"] == [{"shape": [1080, 810], "results": results,
                               "speed": {"preprocess": 4.57, "inference": 20.0, "postprocess": 0.5}}]
    meta = body["metadata"]
    call, alive = meta.pop("functionTimeCall"), meta.pop("functionTimeAlive")
    assert meta == {"imageCount": 1, "classNames": {"0": "person", "5": "bus"}, "model": "yolo26n.onnx",
                    "task": "detect", "version": {"server": __version__}}
    assert 1234.56 <= call <= 1234.57 + took_ms and round(call, 2) == call
    assert 12345.67 <= alive <= 12345.68 + took_ms + 1 and round(alive, 2) == alive
