"""The inference core: pure numpy functions from image bytes to detections, no torch, no HTTP.

Every step mirrors what ``ultralytics`` does for an ONNX model (``LetterBox``, ``scale_boxes``,
``non_max_suppression``, ``Results.summary``) so that a model answers the same here as it does under
``YOLO(onnx).predict``; the parity tests hold that line. The HTTP layer and the model registry only
call these functions, which keeps them reusable for a multi-tenant server.
"""

from __future__ import annotations

import ctypes
import functools
import io
import itertools
import math
import struct
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import BmpImagePlugin, ExifTags, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from inference_service import native

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
FORMATS_BY_MAGIC = {b"\xff\xd8": "JPEG", b"\x89P": "PNG", b"RI": "WEBP", b"BM": "BMP"}
PAD_VALUE = 114  # the grey ultralytics pads with
UNIT_SCALE = (np.arange(256, dtype=np.int32) / np.float32(255)).astype(np.float32)  # v / 255 exactly as numpy does it
NATIVE = native.load()  # the C letterbox kernel, or None (then the numpy port runs)
MAX_WH = 7680  # per-class box offset for class-aware NMS, as ultralytics
MAX_NMS = 30000  # candidates kept before NMS, as ultralytics
UPRIGHT = {  # EXIF orientation -> the view that undoes it on an (H, W, C) array, as ``ImageOps.exif_transpose``
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # transpose
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse
    8: lambda a: a.transpose(1, 0, 2)[::-1],  # rotate 90 counter-clockwise
}


class InputError(ValueError):
    """A client mistake: answered with a 4xx and a message naming the field, never a 5xx."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


def _open(data: bytes) -> Image.Image:
    """Open by magic number with the one PIL plugin it names: no guessing across every format PIL knows,
    no global ``Image.open`` hooks (ultralytics patches it when imported), and pixels stay undecoded."""
    fp = io.BytesIO(data)
    if data.startswith(b"\xff\xd8\xff"):
        return JpegImagePlugin.JpegImageFile(fp)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PngImagePlugin.PngImageFile(fp)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WebPImagePlugin.WebPImageFile(fp)
    if data.startswith(b"BM"):
        return BmpImagePlugin.BmpImageFile(fp)
    raise InputError(f"file is not a supported image ({', '.join(FORMATS)})", "file")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP bytes to an RGB uint8 (H, W, 3) array with EXIF orientation applied.

    The size is read from the header before any pixel is decoded, so a decompression bomb costs a
    header parse, not gigabytes. Alpha is dropped rather than composited, as ``cv2.imread`` does.
    """
    if not data:
        raise InputError("file is empty (0 bytes)", "file")
    try:
        im = _open(data)
    except Image.DecompressionBombError as e:  # PIL's own pixel cap, checked by some plugins (WebP) at open
        raise InputError(f"image is too large ({e})", "file") from e
    except (OSError, SyntaxError, ValueError, struct.error) as e:  # PIL's ways of saying "bad header"
        if isinstance(e, InputError):
            raise
        raise InputError(f"file is not a valid {FORMATS_BY_MAGIC.get(data[:2], 'image')} ({e})", "file") from e
    width, height = im.size
    if width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the {max_pixels / 1e6:g} MP limit", "file"
        )
    try:
        arr = _upright(_pixels(im, data), im)
    except (OSError, SyntaxError, ValueError, struct.error) as e:  # truncated or corrupt data shows when decoding
        raise InputError(f"image could not be decoded ({e})", "file") from e
    if arr.ndim != 3 or min(arr.shape[:2]) < 1:
        raise InputError("image has no pixels", "file")
    return arr


def _pixels(im: Image.Image, data: bytes) -> np.ndarray:
    """RGB pixels. A YCbCr or grey JPEG goes to simplejpeg: the same libjpeg-turbo with the same settings, so
    the same pixels, but ~35% faster than PIL, straight into numpy and without the GIL. (CMYK stays with PIL.)"""
    if im.format == "JPEG" and im.mode in ("RGB", "L"):
        return simplejpeg.decode_jpeg(data, colorspace="RGB")  # strict: a truncated file raises ValueError
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _upright(arr: np.ndarray, im: Image.Image) -> np.ndarray:
    """Undo the EXIF orientation (what ``cv2.imread`` does). Unlike ``ImageOps.exif_transpose`` this reads the
    one tag and never re-serialises the EXIF block, which raised ``TypeError`` on corrupt tags elsewhere in it."""
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    view = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return arr if view is None else np.ascontiguousarray(view(arr))


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
    dw, dh = dw / 2, dh / 2
    return new_w, new_h, round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)


def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of OpenCV's ``INTER_LINEAR`` for one axis.

    Sample positions are ``(i + 0.5) * src / dst - 0.5`` in float32, clamped at the borders, and the
    weights are rounded to multiples of 1/2048, all exactly as ``cv2.resize`` computes them.
    """
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f -= i0.astype(np.float32)
    low, high = i0 < 0, i0 >= src - 1
    f[low | high] = 0
    i0[low], i0[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * 2048).astype(np.int32)
    w1 = np.rint(f * 2048).astype(np.int32)
    return i0, np.minimum(i0 + 1, src - 1), w0, w1


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
def _resize_plan(h: int, w: int, new_h: int, new_w: int, c: int) -> ResizePlan:
    """Per-shape plan: images from one camera share it, so it is cached."""
    ys0, ys1, b0, b1 = _taps(h, new_h)
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
    path) makes the tensors, and so the answers, identical when shrinking (what letterboxing does to
    camera images). Enlarging tiny images may differ by one level where OpenCV switches to scalar code.
    letterbox.c computes the same integers in one pass. Returns (new_h, new_w, c) int32 values 0..255.
    """
    h, w, c = image.shape
    plan = _resize_plan(h, w, new_h, new_w, c)
    return _resize_rows(image.reshape(h, w * c), plan, 0, new_h).reshape(new_h, new_w, c)


def _resize_rows(flat: np.ndarray, plan: ResizePlan, y0: int, y1: int) -> np.ndarray:
    """Output rows ``y0:y1`` of ``resize_bilinear`` from the (h, w * c) image: each band reads only the source
    rows it needs, so bands are independent (and run in parallel) and their buffers stay in cache."""
    r0, r1 = plan.ys0[y0], plan.ys1[y1 - 1] + 1  # both index lists grow with the output row
    src = flat[r0:r1]
    rows = np.take(src, plan.ix0, axis=1).astype(np.int32)
    rows *= plan.a0
    right = np.take(src, plan.ix1, axis=1).astype(np.int32)
    right *= plan.a1
    rows += right
    rows >>= 4
    out = np.take(rows, plan.ys0[y0:y1] - r0, axis=0)
    out *= plan.b0[y0:y1, None]
    out >>= 16
    below = np.take(rows, plan.ys1[y0:y1] - r0, axis=0)
    below *= plan.b1[y0:y1, None]
    below >>= 16
    out += below
    out += 2
    out >>= 2
    return out


def _letterbox_band(flat: np.ndarray, plan: ResizePlan, y0: int, y1: int, dst: np.ndarray,
                    kernel: ctypes.CDLL | None) -> None:
    """Resize output rows ``y0:y1`` and write them scaled to 0..1 into ``dst`` (c, new_h, new_w) float32 planes,
    with the C kernel if given, else numpy: the same floats either way."""
    if kernel is None:
        rows = _resize_rows(flat, plan, y0, y1).reshape(y1 - y0, -1, dst.shape[0])
        np.divide(rows.transpose(2, 0, 1), np.float32(255), out=dst[:, y0:y1])
        return
    band, item = dst[:, y0:y1], dst.itemsize
    status = kernel.letterbox_rows(
        flat.ctypes.data, flat.strides[0], plan.ys0.ctypes.data, plan.ys1.ctypes.data, plan.b0.ctypes.data,
        plan.b1.ctypes.data, plan.ix0.ctypes.data, plan.ix1.ctypes.data, plan.a0.ctypes.data, plan.a1.ctypes.data,
        dst.shape[2], y0, y1, band.ctypes.data, dst.strides[0] // item, dst.strides[1] // item,
        UNIT_SCALE.ctypes.data)
    if status:
        raise MemoryError("letterbox kernel could not allocate its row buffers")


def grid_cells(h: int, w: int, stride: int) -> int:
    """Anchors a YOLO head has for an ``h`` x ``w`` input: one per cell of each level, strides 8 up to ``stride``."""
    return sum(math.ceil(h / s) * math.ceil(w / s) for s in (8 << i for i in range(stride.bit_length() - 3)))


def preprocess(image: np.ndarray, imgsz: tuple[int, int], stride: int, auto: bool, min_cells: int = 0,
               executor: Executor | None = None, bands: int = 1,
               kernel: ctypes.CDLL | None = NATIVE) -> tuple[np.ndarray, Letterbox]:
    """Letterbox an RGB image into a (1, 3, H, W) float32 tensor scaled to 0..1, padded with grey 114.

    ``min_cells``: an end-to-end export's top-k fails on an input with fewer anchors (a panorama's minimal
    rectangle, say), so such an image is padded to the full ``imgsz`` instead; ultralytics fails there.
    ``executor`` and ``bands``: resize and scale that many horizontal bands concurrently (numpy and the C
    kernel release the GIL), which cuts a lone request's letterbox time on a multi-core instance; the tensor is
    the same. ``kernel``: the compiled letterbox (default: the one built next to native.py), None for numpy.
    """
    new_w, new_h, top, bottom, left, right = letterbox_shape(image.shape[:2], imgsz, stride, auto)
    if auto and grid_cells(new_h + top + bottom, new_w + left + right, stride) < min_cells:
        new_w, new_h, top, bottom, left, right = letterbox_shape(image.shape[:2], imgsz, stride, False)
    out_h, out_w = new_h + top + bottom, new_w + left + right
    tensor = np.empty((1, 3, out_h, out_w), dtype=np.float32)
    if top or bottom or left or right:
        tensor.fill(PAD_VALUE / 255)
    dst = tensor[0, :, top : top + new_h, left : left + new_w]
    lb = Letterbox(orig_shape=(image.shape[0], image.shape[1]), input_shape=(out_h, out_w))
    h, w, c = image.shape
    if (h, w) == (new_h, new_w):
        np.divide(image.transpose(2, 0, 1), np.float32(255), out=dst)
        return tensor, lb
    plan, flat = _resize_plan(h, w, new_h, new_w, c), np.ascontiguousarray(image).reshape(h, w * c)
    if c != 3 or image.dtype != np.uint8:  # the kernel is written for what decode_image returns
        kernel = None

    def band(y0: int, y1: int) -> None:
        _letterbox_band(flat, plan, y0, y1, dst, kernel)

    edges = [round(i * new_h / bands) for i in range(bands + 1)] if executor and new_h >= 2 * bands else [0, new_h]
    others = [executor.submit(band, y0, y1) for y0, y1 in itertools.pairwise(edges[1:])] if executor else []
    band(0, edges[1])  # the calling thread takes the first band: one thread wake-up fewer
    for future in others:
        future.result()
    return tensor, lb


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
    pred = output[0]
    return pred[pred[:, 4] > conf][:max_det]


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
    return rows[keep]


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


def summarize(det: Detections, names: dict[int, str], orig_shape: tuple[int, int], normalize: bool,
              decimals: int) -> list[dict]:
    """The ``results`` list of the wire format, like ultralytics ``Results.summary(normalize, decimals)``."""
    h, w = orig_shape if normalize else (1, 1)
    results = []
    rows = zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist(), strict=True)
    for i, (box, score, cls) in enumerate(rows):
        item: dict = {
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
