"""Parity with ultralytics where it is hardest to keep: crowds of overlapping boxes of several classes (ultralytics'
own non_max_suppression as the oracle for the raw exports' post-processing), and whole predicts at imgsz above 640
up to the server's largest, on the demo model against ultralytics' YOLO on the same ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics import YOLO
from ultralytics.utils.nms import non_max_suppression

from inference_service.decode import open_image
from inference_service.model import Model
from inference_service.postprocess import postprocess_raw
from inference_service.settings import ServerSettings
from inference_service.wire import summarize
from tests.helpers_server import demo_model, sample_images, spare_cpu

MAX_IMGSZ = ServerSettings.model_fields["max_imgsz"].default


def crowd(seed: int, clusters: int, per_cluster: int, nc: int) -> np.ndarray:
    """A raw export's output (1, 4 + nc, anchors): clusters of jittered, overlapping boxes, each anchor scoring
    every class, with the best class differing inside a cluster (objects of several classes on top of another)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(50, 590, (clusters, 2))
    xy = np.repeat(centres, per_cluster, axis=0) + rng.normal(0, 6, (clusters * per_cluster, 2))
    wh = np.repeat(rng.uniform(20, 120, (clusters, 2)), per_cluster, axis=0) * rng.uniform(0.8, 1.2, (len(xy), 2))
    scores = rng.uniform(0, 1, (len(xy), nc)) ** 3  # mostly low: the conf threshold matters
    # and small boxes alone, scored near any threshold: which of them pass depends on conf alone
    singles = np.concatenate([rng.uniform(0, 640, (200, 2)), rng.uniform(3, 8, (200, 2)),
                              rng.uniform(0, 0.6, (200, nc))], axis=1)
    return np.concatenate([np.concatenate([xy, wh, scores], axis=1), singles]).T[None].astype(np.float32)


@pytest.mark.parametrize(("seed", "conf", "iou"), [(0, 0.25, 0.7), (1, 0.1, 0.45), (2, 0.05, 0.3), (3, 0.4, 0.9),
                                                   (4, 0.01, 0.5)])
def test_overlapping_boxes_of_several_classes_as_ultralytics_keeps_them(seed: int, conf: float, iou: float) -> None:
    raw = crowd(seed, clusters=60, per_cluster=12, nc=5)
    ours = postprocess_raw(raw, conf, iou, nc=5, max_det=1000)  # every box kept: no cut hides a difference
    [theirs] = non_max_suppression(torch.from_numpy(raw), conf, iou, nc=5, max_det=1000)
    assert len(ours) < 1000
    theirs = theirs.numpy()
    assert len(ours) == len(theirs) > 20 and len(set(ours[:, 5])) == 5
    order = np.lexsort((ours[:, 0], -ours[:, 4]))
    ref_order = np.lexsort((theirs[:, 0], -theirs[:, 4]))
    np.testing.assert_allclose(ours[order, :5], theirs[ref_order, :5], atol=1e-3)
    np.testing.assert_array_equal(ours[order, 5], theirs[ref_order, 5])


@pytest.mark.parametrize(("kind", "imgsz"), [("e2e", 1280), ("raw", MAX_IMGSZ)])
def test_same_answers_as_ultralytics_above_640(kind: str, imgsz: int) -> None:
    """bus.jpg, a real photo the shapes model was not trained on: at 2048 the raw export keeps about 200 boxes of
    several classes over one another at conf 0.1, a crowd for NMS at the server's largest size."""
    model, yolo = Model(demo_model(kind)), YOLO(str(demo_model(kind)), task="detect")
    image = next(p for p in sample_images() if p.name == "bus.jpg")
    tensor, lb = model.preprocess(open_image(image.read_bytes(), 50_000_000), (imgsz, imgsz), spare_cpu())
    assert max(lb.input_shape) == imgsz
    det = model.postprocess(model.infer(tensor), lb, 0.1, 0.7)
    ours = sorted(summarize(det, model.info.names, lb.orig_shape, False, 5), key=lambda d: -d["confidence"])
    ref = yolo.predict(str(image), conf=0.1, iou=0.7, imgsz=imgsz, verbose=False)[0]
    theirs = sorted(ref.summary(normalize=False, decimals=5), key=lambda d: -d["confidence"])
    assert len(ours) == len(theirs) > (100 if kind == "raw" else 0)
    assert len({d["class"] for d in ours}) > 1
    for a, b in zip(ours, theirs, strict=True):
        assert a["class"] == b["class"] and abs(a["confidence"] - b["confidence"]) <= 0.01
        assert all(abs(a["box"][k] - b["box"][k]) <= 1 for k in ("x1", "y1", "x2", "y2"))
