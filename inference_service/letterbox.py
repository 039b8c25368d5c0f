"""Letterboxing like ultralytics ``LetterBox``: resize the image into the model's input, pad with grey, scale to
0..1. The resize runs in the C kernel (letterbox.c, built by native.py) when it is built, else in resize.py's numpy
port: the same floats either way.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from inference_service import native
from inference_service.decode import OpenedImage
from inference_service.resize import ResizePlan, resize_plan, resize_rows

PAD_VALUE = 114  # the grey ultralytics pads with
NATIVE = native.load()  # the C letterbox kernel, or None (then the numpy port runs)


def describe_kernel(kernel: ctypes.CDLL | None = NATIVE) -> str:
    """For the start-up log: ``numpy`` (no kernel), ``native``, or ``native+jpeg`` (jpeg_letterbox.c built in)."""
    if kernel is None:
        return "numpy"
    return "native+jpeg" if native.has_jpeg(kernel) else "native"


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the model input, enough to map boxes back."""

    orig_shape: tuple[int, int]  # (h, w) of the decoded image
    input_shape: tuple[int, int]  # (h, w) of the tensor fed to the model


def letterbox_shape(orig_shape: tuple[int, int], imgsz: tuple[int, int], stride: int, auto: bool) -> tuple[int, ...]:
    """Resized size and paddings of ultralytics ``LetterBox``: (new_w, new_h, top, bottom, left, right).

    ``auto`` pads only to the next stride multiple (what ultralytics does for dynamic-shape ONNX),
    otherwise to ``imgsz`` exactly. Python's ``round`` (banker's) is used on purpose, as upstream.
    """
    h, w = orig_shape
    r = min(imgsz[0] / h, imgsz[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = imgsz[1] - new_w, imgsz[0] - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    half_w, half_h = dw / 2, dh / 2
    return new_w, new_h, round(half_h - 0.1), round(half_h + 0.1), round(half_w - 0.1), round(half_w + 0.1)


def _letterbox_band(flat: np.ndarray, plan: ResizePlan, y0: int, y1: int, dst: np.ndarray,
                    kernel: ctypes.CDLL | None) -> None:
    """Resize output rows ``y0:y1`` and write them scaled to 0..1 into ``dst`` (c, new_h, new_w) float32 planes,
    with the C kernel if given, else numpy: the same floats either way."""
    if kernel is None:
        rows = resize_rows(flat, plan, y0, y1).reshape(y1 - y0, -1, dst.shape[0])
        np.divide(rows.transpose(2, 0, 1), np.float32(255), out=dst[:, y0:y1])
        return
    _check_kernel_call(flat, plan, y0, y1, dst)
    band, item = dst[:, y0:y1], dst.itemsize
    status = kernel.letterbox_rows(
        flat.ctypes.data, flat.strides[0], flat.shape[1], plan.ys0.ctypes.data, plan.ys1.ctypes.data,
        plan.b0.ctypes.data, plan.b1.ctypes.data, plan.ix0.ctypes.data, plan.ix1.ctypes.data, plan.a0.ctypes.data,
        plan.a1.ctypes.data, dst.shape[2], y0, y1, band.ctypes.data, dst.strides[0] // item, dst.strides[1] // item)
    if status:
        raise MemoryError("letterbox kernel could not allocate its row buffers")


def _check_kernel_call(flat: np.ndarray, plan: ResizePlan, y0: int, y1: int, dst: np.ndarray) -> None:
    """The C kernel trusts its arguments: rows beyond the plan or a destination smaller than the plan's output
    would be read or written past their buffers and crash the server. A ValueError instead, for a few
    microseconds."""
    new_h, new_w = len(plan.ys0), len(plan.ix0) // 3
    if not 0 <= y0 <= y1 <= new_h:
        raise ValueError(f"letterbox rows {y0}:{y1} are outside the plan's {new_h} rows")
    if dst.shape != (3, new_h, new_w) or dst.dtype != np.float32 or dst.strides[2] != dst.itemsize:
        raise ValueError(f"letterbox destination {dst.shape} {dst.dtype}: the plan writes (3, {new_h}, {new_w}) "
                         "float32 planes with contiguous rows")
    rows, row_bytes = int(plan.ys1[-1]) + 1, int(plan.ix1[-1]) + 1
    if flat.dtype != np.uint8 or flat.strides[1] != 1 or flat.shape[0] < rows or flat.shape[1] < row_bytes:
        raise ValueError(f"letterbox source {flat.shape} {flat.dtype}: the plan reads {rows} rows of {row_bytes} "
                         "contiguous bytes")


def grid_cells(h: int, w: int, stride: int) -> int:
    """Anchors a YOLO head has for an ``h`` x ``w`` input: one per cell of each level, strides 8 up to ``stride``."""
    return sum(math.ceil(h / s) * math.ceil(w / s) for s in (8 << i for i in range(stride.bit_length() - 3)))


def preprocess(image: np.ndarray, imgsz: tuple[int, int], stride: int, auto: bool, min_cells: int = 0,
               kernel: ctypes.CDLL | None = NATIVE) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an RGB image into a (1, 3, H, W) float32 tensor scaled to 0..1, padded with grey 114.

    ``min_cells``: an end-to-end export's top-k fails on an input with fewer anchors (a panorama's minimal
    rectangle, say), so such an image is padded to the full ``imgsz`` instead; ultralytics fails there.
    ``kernel``: the compiled letterbox (default: the one built next to native.py), None for numpy. One thread
    does every row: split into bands over 2 vCPUs, the letterbox of bus.jpg took longer, not shorter (waking the
    second thread, and the vCPUs slowing each other: benchmarks/RESULTS.md, server section).
    """
    tensor, dst, lb = _canvas(image.shape[:2], imgsz, stride, auto, min_cells)
    h, w, c = image.shape
    if (h, w) == dst.shape[1:]:
        np.divide(image.transpose(2, 0, 1), np.float32(255), out=dst)
        return tensor, lb
    plan, flat = resize_plan(h, w, dst.shape[1], dst.shape[2], c), np.ascontiguousarray(image).reshape(h, w * c)
    if c != 3 or image.dtype != np.uint8:  # the kernel is written for what decode_image returns
        kernel = None
    _letterbox_band(flat, plan, 0, dst.shape[1], dst, kernel)
    return tensor, lb


def preprocess_upload(upload: OpenedImage, imgsz: tuple[int, int], stride: int, auto: bool, min_cells: int = 0,
                      spare_cpu: int | None = None,
                      kernel: ctypes.CDLL | None = NATIVE) -> tuple[np.ndarray, Letterbox]:
    """``preprocess`` of the upload's pixels, the same tensor. With a ``spare_cpu`` (one no other work of this
    request runs on) a plain JPEG is decoded straight into the letterbox, which runs on that CPU as rows are
    decoded (jpeg_letterbox.c): 0.8-1.0 ms less for a lone photo. Anything else is decoded, then letterboxed; so is
    a JPEG this libjpeg refuses, so that simplejpeg's decode alone decides what is accepted (and says why not):
    the kernel links the system's libjpeg-turbo, simplejpeg bundles a newer one (lossless JPEGs, for one)."""
    if spare_cpu is not None and kernel is not None and native.has_jpeg(kernel) and upload.plain_jpeg:
        decoded_into = _jpeg_letterbox(upload, imgsz, stride, auto, min_cells, spare_cpu, kernel)
        if decoded_into is not None:
            return decoded_into
    return preprocess(upload.pixels(), imgsz, stride, auto, min_cells, kernel)


def _jpeg_letterbox(upload: OpenedImage, imgsz: tuple[int, int], stride: int, auto: bool, min_cells: int,
                    spare_cpu: int, kernel: ctypes.CDLL) -> tuple[np.ndarray, Letterbox] | None:
    """The tensor from jpeg_letterbox.c, or None when it has nothing to resize (the image is the input's size) or
    refused the data, or memory ran out: the caller's other path answers then, whatever its answer is."""
    width, height = upload.image.size
    tensor, dst, lb = _canvas((height, width), imgsz, stride, auto, min_cells)
    if (height, width) == dst.shape[1:]:
        return None
    plan = resize_plan(height, width, dst.shape[1], dst.shape[2], 3)  # dst and the plan are made here, for each other
    status = kernel.jpeg_letterbox(
        upload.data, len(upload.data), height, width, plan.ys0.ctypes.data, plan.ys1.ctypes.data,
        plan.b0.ctypes.data, plan.b1.ctypes.data, plan.ix0.ctypes.data, plan.ix1.ctypes.data, plan.a0.ctypes.data,
        plan.a1.ctypes.data, dst.shape[2], dst.shape[1], dst.ctypes.data, dst.strides[0] // dst.itemsize,
        dst.strides[1] // dst.itemsize, spare_cpu)
    return None if status else (tensor, lb)


def _canvas(orig_shape: tuple[int, int], imgsz: tuple[int, int], stride: int, auto: bool,
            min_cells: int) -> tuple[np.ndarray, np.ndarray, Letterbox]:
    """The (1, 3, H, W) tensor, its padding grey, the (3, new_h, new_w) view of it the image is resized into, and
    where that is."""
    new_w, new_h, top, bottom, left, right = letterbox_shape(orig_shape, imgsz, stride, auto)
    if auto and grid_cells(new_h + top + bottom, new_w + left + right, stride) < min_cells:
        new_w, new_h, top, bottom, left, right = letterbox_shape(orig_shape, imgsz, stride, False)
    out_h, out_w = new_h + top + bottom, new_w + left + right
    tensor = np.empty((1, 3, out_h, out_w), dtype=np.float32)
    if top or bottom or left or right:
        tensor.fill(PAD_VALUE / 255)
    dst = tensor[0, :, top : top + new_h, left : left + new_w]
    return tensor, dst, Letterbox(orig_shape=(orig_shape[0], orig_shape[1]), input_shape=(out_h, out_w))
