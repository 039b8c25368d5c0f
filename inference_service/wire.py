"""The predict answer in the Ultralytics wire format (shared/reference/predict-api.md): the ``results`` of an
image, as ultralytics ``Results.summary`` gives them, and the body around them.
"""

from __future__ import annotations

import time
from typing import Any

from inference_service import __version__
from inference_service.model import ModelInfo
from inference_service.postprocess import Detections

STARTED = time.time()  # the server's start, near enough: ``functionTimeAlive`` counts from it


def summarize(det: Detections, names: dict[int, str], orig_shape: tuple[int, int], normalize: bool,
              decimals: int) -> list[dict[str, Any]]:
    """The ``results`` list of the wire format, like ultralytics ``Results.summary(normalize, decimals)``."""
    h, w = orig_shape if normalize else (1, 1)
    results = []
    rows = zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist(), strict=True)
    for i, (box, score, cls) in enumerate(rows):
        item: dict[str, Any] = {
            "name": names.get(cls, str(cls)),
            "class": cls,
            "confidence": round(score, decimals),
            "box": {
                "x1": round(box[0] / w, decimals),
                "y1": round(box[1] / h, decimals),
                "x2": round(box[2] / w, decimals),
                "y2": round(box[3] / h, decimals),
            },
        }
        if det.keypoints is not None:
            kpt = det.keypoints[i]
            item["keypoints"] = {
                "x": (kpt[:, 0] / w).astype(float).round(decimals).tolist(),
                "y": (kpt[:, 1] / h).astype(float).round(decimals).tolist(),
            }
            if kpt.shape[1] == 3:
                item["keypoints"]["visible"] = kpt[:, 2].astype(float).round(decimals).tolist()
        results.append(item)
    return results


def predict_body(info: ModelInfo, shape: tuple[int, int], results: list[dict[str, Any]], timings: dict[str, float],
                 started: float) -> dict[str, Any]:
    """The whole answer for one image: ``shape`` (height, width), ``timings`` in ms by stage, ``started`` the
    ``time.perf_counter`` value when the request arrived."""
    return {
        "images": [{
            "shape": list(shape),
            "speed": {stage: round(ms, 2) for stage, ms in timings.items()},
            "results": results,
        }],
        "metadata": {
            "imageCount": 1,
            "classNames": {str(k): v for k, v in info.names.items()},
            "model": info.name,
            "task": info.task,
            "functionTimeCall": _ms(time.perf_counter() - started),
            "functionTimeAlive": _ms(time.time() - STARTED),
            "version": {"server": __version__},
        },
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
