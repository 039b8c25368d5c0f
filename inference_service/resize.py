"""OpenCV's ``INTER_LINEAR`` resize of uint8 images in numpy, integer for integer: ultralytics resizes with OpenCV,
and this server ships without it. letterbox.c computes the same integers in one pass; both read a ``ResizePlan``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def _taps(src: int, dst: int, vertical: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of OpenCV's ``INTER_LINEAR`` for one axis.

    Sample positions are ``(i + 0.5) * src / dst - 0.5`` in float32 and the weights are rounded to multiples of
    1/2048, all exactly as ``cv2.resize`` computes them. Past a border the two passes differ, and so does this:
    the horizontal one takes the border pixel whole, the vertical one keeps its weights and only clamps the rows
    it reads (both are then the border row, the rounded weights summing to 2047..2049), which moves a level on
    the first and last rows of an enlarged image.
    """
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f -= i0.astype(np.float32)
    if not vertical:
        f[(i0 < 0) | (i0 >= src - 1)] = 0
    w0 = np.rint((np.float32(1) - f) * 2048).astype(np.int32)
    w1 = np.rint(f * 2048).astype(np.int32)
    return i0.clip(0, src - 1), (i0 + 1).clip(0, src - 1), w0, w1


@dataclass(frozen=True)
class ResizePlan:
    """Gather indices and weights of one resize, int32 and contiguous for both the numpy port and the C kernel."""

    ys0: np.ndarray  # per output row: the source rows above and below, and their weights
    ys1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    ix0: np.ndarray  # per output value (x * c + channel): the source bytes left and right, and their weights
    ix1: np.ndarray
    a0: np.ndarray
    a1: np.ndarray


@functools.lru_cache(maxsize=256)
def resize_plan(h: int, w: int, new_h: int, new_w: int, c: int) -> ResizePlan:
    """Per-shape plan: images from one camera share it, so it is cached."""
    ys0, ys1, b0, b1 = _taps(h, new_h, vertical=True)
    xs0, xs1, a0, a1 = _taps(w, new_w)
    ch = np.arange(c)
    i32 = functools.partial(np.ascontiguousarray, dtype=np.int32)
    return ResizePlan(i32(ys0), i32(ys1), b0, b1, i32((xs0[:, None] * c + ch).ravel()),
                      i32((xs1[:, None] * c + ch).ravel()), np.repeat(a0, c), np.repeat(a1, c))


def resize_bilinear(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Numpy port of ``cv2.resize(..., INTER_LINEAR)`` for uint8 images, no OpenCV needed.

    Ultralytics resizes with OpenCV. PIL's ``resize`` antialiases when shrinking and its affine sampler
    rounds differently (off by one on a third of the pixels), which moved confidences by up to 0.03;
    reproducing OpenCV's fixed-point arithmetic (horizontal pass, then the vertical pass of its SIMD
    path, and its border rules) makes the tensors, and so the answers, identical, shrinking (what letterboxing
    does to camera images) or enlarging. letterbox.c computes the same integers in one pass. Returns
    (new_h, new_w, c) int32 values 0..255.
    """
    h, w, c = image.shape
    plan = resize_plan(h, w, new_h, new_w, c)
    return resize_rows(image.reshape(h, w * c), plan, 0, new_h).reshape(new_h, new_w, c)


def resize_rows(flat: np.ndarray, plan: ResizePlan, y0: int, y1: int) -> np.ndarray:
    """Output rows ``y0:y1`` of ``resize_bilinear`` from the (h, w * c) image, reading only the source rows they
    need: the C kernel's row range, so that a call for any rows checks against it."""
    r0, r1 = plan.ys0[y0], plan.ys1[y1 - 1] + 1  # both index lists grow with the output row
    src = flat[r0:r1]
    rows = np.take(src, plan.ix0, axis=1).astype(np.int32)
    rows *= plan.a0
    right = np.take(src, plan.ix1, axis=1).astype(np.int32)
    right *= plan.a1
    rows += right
    rows >>= 4
    out: np.ndarray = np.take(rows, plan.ys0[y0:y1] - r0, axis=0)
    out *= plan.b0[y0:y1, None]
    out >>= 16
    below = np.take(rows, plan.ys1[y0:y1] - r0, axis=0)
    below *= plan.b1[y0:y1, None]
    below >>= 16
    out += below
    out += 2
    out >>= 2
    return out
