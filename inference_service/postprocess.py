"""Model outputs to detections in original-image pixels, as ultralytics ``non_max_suppression`` and
``scale_boxes`` do it: the confidence filter, class-aware NMS for raw exports, and undoing the letterbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference_service.letterbox import Letterbox

MAX_WH = 7680  # per-class box offset for class-aware NMS, as ultralytics
MAX_NMS = 30000  # candidates kept before NMS, as ultralytics


def _unletterbox(lb: Letterbox) -> tuple[float, float, int, int]:
    """Gains and paddings (gain_x, gain_y, pad_x, pad_y) recomputed from the shapes, as ultralytics does."""
    (h0, w0), (h1, w1) = lb.orig_shape, lb.input_shape
    gain = min(h1 / h0, w1 / w0)
    new_h, new_w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    return new_w / w0, new_h / h0, round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)


def scale_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map xyxy boxes from model-input pixels to original pixels and clip them (ultralytics ``scale_boxes``)."""
    out = scale_points(boxes.reshape(-1, 2, 2), lb)
    return out.reshape(-1, 4)


def scale_points(xy: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map (..., 2) points (box corners, keypoints) to original pixels, clipped (ultralytics ``scale_coords``)."""
    gain_x, gain_y, pad_x, pad_y = _unletterbox(lb)
    h0, w0 = lb.orig_shape
    out = xy.astype(np.float32, copy=True)
    out[..., 0] = ((out[..., 0] - pad_x) / gain_x).clip(0, w0)
    out[..., 1] = ((out[..., 1] - pad_y) / gain_y).clip(0, h0)
    return out


@dataclass
class Detections:
    """Rows of one image's result in original pixels: xyxy boxes, scores, classes and task extras."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    classes: np.ndarray  # (n,) int64
    keypoints: np.ndarray | None = None  # (n, k, 3) x, y, visibility for pose


def postprocess_e2e(output: np.ndarray, conf: float, max_det: int = 300) -> np.ndarray:
    """End-to-end exports already ran their own top-k: keep rows scoring above ``conf`` (N, 6 + extra)."""
    pred: np.ndarray = output[0]
    kept: np.ndarray = pred[pred[:, 4] > conf][:max_det]
    return kept


def xywh2xyxy(xywh: np.ndarray) -> np.ndarray:
    """Centre/size boxes to corner boxes."""
    out = np.empty_like(xywh)
    half = xywh[:, 2:4] / 2
    out[:, :2] = xywh[:, :2] - half
    out[:, 2:4] = xywh[:, :2] + half
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS like ``torchvision.ops.nms``: indices kept, by descending score; IoU > ``iou`` suppresses."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, len(order))[~suppressed[i + 1 :]]
        if not len(rest):
            break
        iw = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        ih = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = iw * ih
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) > iou]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def postprocess_raw(output: np.ndarray, conf: float, iou: float, nc: int, max_det: int = 300) -> np.ndarray:
    """Raw exports (1, 4 + nc + extra, anchors): best class per anchor, ``conf`` filter, class-aware NMS.

    Returns rows (N, 6 + extra) shaped like the end-to-end output: x1, y1, x2, y2, score, class, extras.
    """
    pred = output[0].T  # (anchors, 4 + nc + extra)
    cls_scores = pred[:, 4 : 4 + nc]
    best = cls_scores.max(1)
    pred, cls_scores, best = pred[best > conf], cls_scores[best > conf], best[best > conf]
    if not len(pred):
        return np.zeros((0, pred.shape[1] - nc + 2), dtype=np.float32)
    rows = np.concatenate(
        [xywh2xyxy(pred[:, :4]), best[:, None], cls_scores.argmax(1)[:, None].astype(np.float32), pred[:, 4 + nc :]],
        axis=1,
    )
    if len(rows) > MAX_NMS:
        rows = rows[np.argsort(-rows[:, 4], kind="stable")[:MAX_NMS]]
    keep = nms(rows[:, :4] + rows[:, 5:6] * MAX_WH, rows[:, 4], iou)[:max_det]
    kept: np.ndarray = rows[keep]
    return kept


def to_detections(rows: np.ndarray, lb: Letterbox, kpt_shape: tuple[int, int] | None = None) -> Detections:
    """Map (N, 6 + extra) rows in model-input pixels to original-image detections."""
    keypoints = None
    if kpt_shape is not None:
        kpts = rows[:, 6 : 6 + kpt_shape[0] * kpt_shape[1]].reshape(len(rows), *kpt_shape)
        keypoints = kpts.astype(np.float32, copy=True)
        keypoints[..., :2] = scale_points(kpts[..., :2], lb)
    return Detections(
        boxes=scale_boxes(rows[:, :4], lb),
        scores=rows[:, 4].astype(np.float32),
        classes=rows[:, 5].astype(np.int64),
        keypoints=keypoints,
    )
