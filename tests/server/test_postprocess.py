"""Model outputs to the boxes, scores, classes and keypoints a client sees, against ultralytics' own functions on
synthetic outputs (no model run): ``non_max_suppression`` for raw exports, ``scale_boxes``/``scale_coords`` for
undoing the letterbox, so a box that moves by a pixel, a class that leaks into another's NMS or a lost keypoint
shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from ultralytics.utils import ops
from ultralytics.utils.nms import non_max_suppression

from inference_service.letterbox import Letterbox, letterbox_shape
from inference_service.postprocess import MAX_NMS, nms, postprocess_e2e, postprocess_raw, scale_boxes, to_detections

# (h, w) of the decoded image and the letterboxed input, with auto (minimal rectangle) and without: padding on
# x only, on y only, none, odd splits (the odd pixel goes right or bottom), slivers of one pixel, enlarging and
# shrinking
LETTERBOXES = [((1080, 1920), 640, True), ((1080, 1920), 640, False), ((1920, 1080), 640, False),
               ((481, 640), 640, True), ((37, 1000), 320, False), ((400, 200), 640, False), ((100, 100), 640, True),
               ((3, 2000), 1280, False), ((720, 1281), 480, False), ((640, 481), 640, False),
               ((1, 3000), 640, False), ((3000, 1), 640, True)]


def letterboxed(orig: tuple[int, int], size: int, auto: bool) -> tuple[Letterbox, list[float]]:
    """The letterbox, and a box inside the image's part of the input (where a one-pixel sliver's boxes are)."""
    new_w, new_h, top, bottom, left, right = letterbox_shape(orig, (size, size), 32, auto)
    inner = [left + 0.2 * new_w, top + 0.3 * new_h, left + 0.7 * new_w, top + 0.9 * new_h]
    return Letterbox(orig_shape=orig, input_shape=(new_h + top + bottom, new_w + left + right)), inner


def raw_output(rng: np.random.Generator, anchors: int, nc: int, extra: int, size: int) -> np.ndarray:
    """(1, 4 + nc + extra, anchors) like a raw export: clustered xywh boxes (so NMS has work), distinct scores."""
    centres = rng.uniform(0, size, (anchors // 8 + 1, 2))[rng.integers(0, anchors // 8 + 1, anchors)]
    xywh = np.concatenate([centres + rng.normal(0, 6, (anchors, 2)), rng.uniform(8, 120, (anchors, 2))], 1)
    scores = rng.permutation(anchors * nc).reshape(anchors, nc) / (anchors * nc)  # distinct: no tie to order
    extras = rng.uniform(0, size, (anchors, extra))
    return np.concatenate([xywh, scores, extras], 1).T[None].astype(np.float32)


@pytest.mark.parametrize(("nc", "extra", "conf", "iou", "max_det"),
                         [(1, 0, 0.25, 0.7, 300), (5, 0, 0.5, 0.45, 300), (3, 6, 0.1, 0.6, 300), (4, 0, 0.05, 0.5, 7)],
                         ids=["one-class", "five-classes", "keypoint-columns", "max-det"])
def test_raw_rows_are_ultralytics_nms(nc: int, extra: int, conf: float, iou: float, max_det: int) -> None:
    """Best class per anchor, strict conf filter, class-aware NMS, max_det: the rows ultralytics keeps, in order."""
    rng = np.random.default_rng(nc * 10 + extra)
    raw = raw_output(rng, 400, nc, extra, 640)
    ours = postprocess_raw(raw, conf, iou, nc=nc, max_det=max_det)
    [ref] = non_max_suppression(torch.from_numpy(raw), conf, iou, max_det=max_det, nc=nc)
    assert ours.shape == tuple(ref.shape) and len(ours) > 1
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-4)


def test_at_most_300_detections_by_default_as_ultralytics() -> None:
    """A crowded image: 500 separate boxes above conf, the 300 best answered (ultralytics' default max_det)."""
    rng = np.random.default_rng(6)
    grid = np.stack(np.meshgrid(np.arange(25), np.arange(20)), -1).reshape(-1, 2) * 30.0 + 15
    raw = np.concatenate([grid, np.full((500, 2), 20.0), rng.permutation(500)[:, None] / 500 + 0.3], 1)
    raw = raw.T[None].astype(np.float32)
    [ref] = non_max_suppression(torch.from_numpy(raw), 0.25, 0.7, nc=1)
    ours = postprocess_raw(raw, 0.25, 0.7, nc=1)
    assert len(ours) == len(ref) == 300
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)
    e2e = np.concatenate([ours, ours])[None]  # 600 end-to-end rows above conf
    [ref] = non_max_suppression(torch.from_numpy(e2e), 0.25, end2end=True)
    np.testing.assert_array_equal(postprocess_e2e(e2e, 0.25), ref.numpy())
    assert len(ref) == 300


def test_no_box_above_conf_is_an_empty_table_of_the_right_width() -> None:
    raw = raw_output(np.random.default_rng(1), 50, 3, 6, 640)
    out = postprocess_raw(raw, conf=1.0, iou=0.7, nc=3)
    [ref] = non_max_suppression(torch.from_numpy(raw), 1.0, 0.7, nc=3)
    assert out.shape == tuple(ref.shape) == (0, 12) and out.dtype == np.float32


def test_only_the_top_candidates_reach_nms() -> None:
    """Over MAX_NMS candidates, the lowest-scoring are dropped before NMS, as ultralytics does (its max_nms)."""
    n = MAX_NMS + 1
    raw = np.zeros((1, 4 + 2, n), np.float32)
    raw[0, :4, : n // 2] = np.array([[100], [100], [50], [50]])  # two boxes, each repeated: the best of each
    raw[0, :4, n // 2 :] = np.array([[300], [100], [50], [50]])  # suppresses its copies
    raw[0, 4, :-1] = np.random.default_rng(0).permutation(np.linspace(0.9, 0.5, n - 1))
    raw[0, :4, -1] = [400, 400, 50, 50]  # another class, elsewhere, scoring lowest of all
    raw[0, 5, -1] = 0.3
    ours = postprocess_raw(raw, 0.25, 0.7, nc=2)
    [ref] = non_max_suppression(torch.from_numpy(raw), 0.25, 0.7, nc=2)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-6)
    assert ours[:, 5].tolist() == [0, 0]


def test_nms_keeps_a_box_whose_iou_equals_the_threshold() -> None:
    """IoU exactly at ``iou`` does not suppress, IoU above it does (torchvision.ops.nms)."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    for iou in (0.5, 0.6, 0.3):
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, iou), ref)
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 3]


def test_nms_keeps_equal_scores_in_anchor_order() -> None:
    """Ties are ordered by anchor, so the same image always gets the same answer in the same order."""
    xy = np.arange(200, dtype=np.float32)[:, None] * 20
    boxes = np.concatenate([xy, xy, xy + 10, xy + 10], 1)  # apart from each other
    scores = np.random.default_rng(0).integers(5, 8, 200).astype(np.float32) / 10  # three values, many ties
    expected = [i for score in (0.7, 0.6, 0.5) for i in range(200) if scores[i] == np.float32(score)]
    assert nms(boxes, scores, 0.5).tolist() == expected


def test_e2e_rows_keep_scores_above_conf_up_to_max_det() -> None:
    rng = np.random.default_rng(3)
    out = np.concatenate([rng.uniform(0, 600, (1, 50, 4)), rng.uniform(0, 1, (1, 50, 1)),
                          rng.integers(0, 80, (1, 50, 1))], 2).astype(np.float32)
    out[0, 10, 4] = 0.4  # exactly at conf: dropped
    for conf, max_det in [(0.4, 300), (0.2, 5), (0.0, 300)]:
        ref = out[0][out[0, :, 4] > conf][:max_det]
        np.testing.assert_array_equal(postprocess_e2e(out, conf, max_det), ref)


@pytest.mark.parametrize(("orig", "size", "auto"), LETTERBOXES)
def test_boxes_map_back_as_ultralytics_scale_boxes(orig: tuple[int, int], size: int, auto: bool) -> None:
    """Boxes anywhere in the input, padding included (clipped to the image), map back to the same pixels."""
    lb, inner = letterboxed(orig, size, auto)
    h1, w1 = lb.input_shape
    xy = np.random.default_rng(size).uniform(-20, [w1 + 20, h1 + 20], (40, 2))
    corners = [[-20, -20, 10, 10], [w1 - 10, h1 - 10, w1 + 20, h1 + 20], inner]  # past both edges: clipped
    boxes = np.concatenate([np.concatenate([xy, xy + 30], 1), corners]).astype(np.float32)
    ref = ops.scale_boxes(lb.input_shape, boxes.copy(), orig)
    ours = scale_boxes(boxes, lb)
    assert ours.dtype == np.float32  # float32 as ultralytics computes them: the same digits in the JSON
    np.testing.assert_array_equal(ours, ref)
    assert 0 < ref[-1, 0] < ref[-1, 2] < orig[1] and 0 < ref[-1, 1] < ref[-1, 3] < orig[0]
    assert (ref[:, [0, 2]] == 0).any() and (ref[:, [0, 2]] == orig[1]).any()  # both clips were exercised
    assert (ref[:, [1, 3]] == 0).any() and (ref[:, [1, 3]] == orig[0]).any()


@pytest.mark.parametrize(("orig", "size", "auto"), LETTERBOXES[:5])
def test_detections_as_ultralytics_with_keypoints(orig: tuple[int, int], size: int, auto: bool) -> None:
    """Pose rows: boxes and keypoint x, y mapped back, visibility untouched, scores float, classes whole numbers."""
    lb, _ = letterboxed(orig, size, auto)
    h1, w1 = lb.input_shape
    rng = np.random.default_rng(w1)
    n = 9
    xy = rng.uniform(0, [w1, h1], (n, 2))
    kpts = np.concatenate([rng.uniform(-5, [w1 + 5, h1 + 5], (n, 17, 2)), rng.uniform(0, 1, (n, 17, 1))], 2)
    rows = np.concatenate([xy, xy + 40, rng.uniform(0, 1, (n, 1)), rng.integers(0, 3, (n, 1)),
                           kpts.reshape(n, -1)], 1).astype(np.float32)
    before = rows.copy()
    det = to_detections(rows, lb, (17, 3))
    np.testing.assert_array_equal(rows, before)  # the caller's rows are left as they were
    np.testing.assert_allclose(det.boxes, ops.scale_boxes(lb.input_shape, rows[:, :4].copy(), orig), atol=1e-3)
    ref_kpts = ops.scale_coords(lb.input_shape, kpts.astype(np.float32), orig)
    assert det.keypoints is not None and det.keypoints.shape == (n, 17, 3)
    np.testing.assert_allclose(det.keypoints, ref_kpts, atol=1e-3)
    assert det.scores.dtype == np.float32 and det.scores.tolist() == rows[:, 4].tolist()
    assert det.classes.dtype == np.int64 and det.classes.tolist() == rows[:, 5].astype(int).tolist()
    assert to_detections(rows[:, :6], lb).keypoints is None
