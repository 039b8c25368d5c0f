"""Parity with ultralytics on the same ONNX and images: same classes, boxes within 1 px, conf within 0.01."""

from __future__ import annotations

from pathlib import Path

import pytest
from ultralytics import YOLO

from inference_service.decode import open_image
from inference_service.model import Model
from inference_service.wire import summarize
from tests.helpers_server import demo_model, sample_images, spare_cpu

CASES = [(0.25, 0.7, None, False, 5), (0.1, 0.5, 320, False, 5), (0.05, 0.7, 640, True, 4), (0.25, 0.7, 256, False, 2)]


@pytest.fixture(scope="module", params=["e2e", "raw"])
def models(request: pytest.FixtureRequest) -> tuple[Model, YOLO]:
    path = demo_model(request.param)
    return Model(path), YOLO(str(path), task="detect")


@pytest.mark.parametrize("image", sample_images(), ids=lambda p: p.name)
@pytest.mark.parametrize(("conf", "iou", "imgsz", "normalize", "decimals"), CASES)
def test_same_answers_as_ultralytics(models: tuple[Model, YOLO], image: Path, conf: float, iou: float,
                                     imgsz: int | None, normalize: bool, decimals: int) -> None:
    model, yolo = models
    size = (imgsz, imgsz) if imgsz else model.info.imgsz
    tensor, lb = model.preprocess(open_image(image.read_bytes(), 50_000_000), size, spare_cpu())
    det = model.postprocess(model.infer(tensor), lb, conf, iou)
    ours = summarize(det, model.info.names, lb.orig_shape, normalize, decimals)
    ref = yolo.predict(str(image), conf=conf, iou=iou, imgsz=size[0], verbose=False)[0]
    theirs = ref.summary(normalize=normalize, decimals=decimals)
    assert len(ours) == len(theirs)
    h, w = lb.orig_shape
    tol = (1 / w, 1 / h) if normalize else (1, 1)
    for a, b in zip(sorted(ours, key=lambda d: -d["confidence"]), sorted(theirs, key=lambda d: -d["confidence"]),
                    strict=True):
        assert a["class"] == b["class"] and a["name"] == b["name"]
        assert abs(a["confidence"] - b["confidence"]) <= 0.01
        for k in ("x1", "x2"):
            assert abs(a["box"][k] - b["box"][k]) <= tol[0] + 10**-decimals
        for k in ("y1", "y2"):
            assert abs(a["box"][k] - b["box"][k]) <= tol[1] + 10**-decimals


def test_demo_samples_have_detections() -> None:
    """Guard against a vacuous parity run: the demo model must find shapes in its samples."""
    model = Model(demo_model("e2e"))
    found = 0
    for image in sample_images()[2:]:
        tensor, lb = model.preprocess(open_image(image.read_bytes(), 50_000_000), model.info.imgsz)
        found += len(model.postprocess(model.infer(tensor), lb, 0.25, 0.7).scores)
    assert found >= 4
