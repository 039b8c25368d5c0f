"""The numpy core against the libraries ultralytics uses: OpenCV's resize, LetterBox, torchvision NMS, PIL decode."""

from __future__ import annotations

import io
import platform

import cv2
import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps
from ultralytics.data.augment import LetterBox

from inference_service.decode import decode_image
from inference_service.errors import InputError
from inference_service.letterbox import Letterbox, preprocess
from inference_service.model import ModelInfo
from inference_service.params import parse_params
from inference_service.postprocess import Detections, nms, postprocess_e2e, postprocess_raw, to_detections
from inference_service.resize import resize_bilinear
from inference_service.wire import summarize
from tests.helpers_server import encode, ultralytics_assets

NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
NOISE_PNG, NOISE_JPEG = encode(NOISE, "PNG"), encode(NOISE, "JPEG")
INFO = ModelInfo(name="m", task="detect", names={0: "a"}, stride=32, imgsz=(640, 640), end2end=True, dynamic=True,
                 kpt_shape=None)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(32, 900), w=st.integers(32, 900), fy=st.floats(0.05, 1.0), fx=st.floats(0.05, 1.0),
       seed=st.integers(0, 2**16))
def test_shrinking_is_bit_exact_with_opencv(h: int, w: int, fy: float, fx: float, seed: int) -> None:
    """Letterboxing camera images shrinks them: there the tensors must be identical to ultralytics'."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    nh, nw = max(32, round(h * fy)), max(32, round(w * fx))
    ref = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_bilinear(image, nw, nh), ref)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), nh=st.integers(1, 400), nw=st.integers(1, 400),
       seed=st.integers(0, 2**16))
def test_any_resize_is_bit_exact_with_opencv(h: int, w: int, nh: int, nw: int, seed: int) -> None:
    """Enlarging too, first and last rows included (OpenCV's vertical pass keeps its weights past a border)."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_bilinear(image, nw, nh), ref)


@settings(max_examples=100, deadline=None)
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), size=st.sampled_from([160, 256, 320, 480, 640, 1280]),
       auto=st.booleans())
def test_letterbox_matches_ultralytics(h: int, w: int, size: int, auto: bool) -> None:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    ref = LetterBox((size, size), auto=auto, stride=32)(image=image)
    tensor, lb = preprocess(image, (size, size), 32, auto)
    assert tensor.shape == (1, 3, *ref.shape[:2])
    assert lb.input_shape == ref.shape[:2] and lb.orig_shape == (h, w)


def test_preprocess_tensor_equals_ultralytics() -> None:
    bgr = cv2.imread(str(ultralytics_assets() / "bus.jpg"))
    ref = LetterBox((640, 640), auto=True, stride=32)(image=bgr)[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)
    rgb = decode_image((ultralytics_assets() / "bus.jpg").read_bytes(), 50_000_000)
    tensor, _ = preprocess(rgb, (640, 640), 32, auto=True)
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 640, 480)
    np.testing.assert_array_equal(tensor, ref)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**16), iou=st.floats(0.05, 0.95))
def test_nms_matches_torchvision(n: int, seed: int, iou: float) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, (n, 2)).astype(np.float32)], 1)
    scores = rng.permutation(n).astype(np.float32) / n + 0.001  # distinct: ties order arbitrarily in torchvision
    ours = nms(boxes, scores, iou)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_postprocess_raw_is_class_aware_and_maps_boxes_back() -> None:
    # two overlapping boxes of different classes both survive; a same-class duplicate does not
    raw = np.zeros((1, 4 + 2, 3), dtype=np.float32)
    raw[0, :4, 0] = [100, 100, 50, 50]
    raw[0, :4, 1] = [102, 100, 50, 50]
    raw[0, :4, 2] = [101, 101, 50, 50]
    raw[0, 4, 0], raw[0, 5, 1], raw[0, 4, 2] = 0.9, 0.8, 0.6
    rows = postprocess_raw(raw, conf=0.25, iou=0.7, nc=2)
    assert rows[:, 5].tolist() == [0, 1] and rows[:, 4].tolist() == pytest.approx([0.9, 0.8])
    lb = Letterbox(orig_shape=(400, 200), input_shape=(640, 320))  # gain 1.6, no padding
    det = to_detections(rows, lb)
    assert det.boxes[0].tolist() == pytest.approx([75 / 1.6, 75 / 1.6, 125 / 1.6, 125 / 1.6])


def test_postprocess_e2e_filters_by_conf_strictly() -> None:
    out = np.array([[[0, 0, 10, 10, 0.5, 1], [0, 0, 5, 5, 0.25, 0], [1, 1, 2, 2, 0.1, 0]]], dtype=np.float32)
    assert postprocess_e2e(out, 0.25)[:, 4].tolist() == [0.5]


def test_summarize_normalizes_and_rounds() -> None:
    det = Detections(boxes=np.array([[10, 20, 110, 220]], np.float32), scores=np.array([0.876543], np.float32),
                          classes=np.array([0]))
    [item] = summarize(det, {0: "person"}, (400, 200), normalize=True, decimals=2)
    assert item == {"name": "person", "class": 0, "confidence": 0.88,
                    "box": {"x1": 0.05, "y1": 0.05, "x2": 0.55, "y2": 0.55}}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_decode_formats(fmt: str) -> None:
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    arr = decode_image(encode(image, fmt), 1_000_000)
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert abs(int(arr[15, 20, 0]) - 200) < 8


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_decode_other_modes_become_rgb(mode: str) -> None:
    arr = decode_image(encode(Image.new(mode, (8, 6)), "PNG"), 1_000_000)
    assert arr.shape == (6, 8, 3)


def test_decode_honours_exif_orientation() -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    arr = decode_image(encode(image, "JPEG", exif=exif, quality=95), 1_000_000)
    assert arr.shape == (60, 20, 3)  # displayed upright: taller than wide
    assert arr[2, 10, 0] > 200 and arr[2, 10, 2] < 60  # the left strip is now on top
    assert arr[-2, 10, 2] > 200


JPEG_VARIANTS = {  # what cameras and encoders produce: chroma subsampling, progressive, grey, CMYK (PIL decodes it)
    "420": {"subsampling": 2}, "422": {"subsampling": 1}, "444": {"subsampling": 0},
    "progressive": {"progressive": True}, "grey": {"mode": "L"}, "cmyk": {"mode": "CMYK"},
}


@pytest.mark.parametrize("variant", JPEG_VARIANTS)
def test_jpeg_pixels_equal_pil_and_opencv(variant: str) -> None:
    """The fast JPEG path must not move a box: its pixels are PIL's (and cv2.imread's) exactly."""
    options = dict(JPEG_VARIANTS[variant])
    image = NOISE.resize((333, 250)).convert(options.pop("mode", "RGB"))
    data = encode(image, "JPEG", quality=90, **options)
    arr = decode_image(data, 1_000_000)
    np.testing.assert_array_equal(arr, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    if variant != "cmyk":  # OpenCV converts CMYK its own way; ultralytics users rarely send CMYK
        np.testing.assert_array_equal(arr, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_sample_photos_decode_as_opencv_does(name: str) -> None:
    data = (ultralytics_assets() / name).read_bytes()
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decode_image(data, 50_000_000), expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_as_pil_exif_transpose(fmt: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(NOISE.resize((64, 40)), fmt, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    arr = decode_image(data, 1_000_000)
    assert arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, expected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "not a supported image"),
        (b"hello, world", "not a supported image"),
        (NOISE_PNG[: len(NOISE_PNG) // 2], "could not be decoded"),
        (NOISE_JPEG[: len(NOISE_JPEG) // 2], "could not be decoded"),
        (NOISE_JPEG[:300], "not a valid JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not a valid PNG"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "not a supported image"),
    ],
    ids=["empty", "gif-magic-only", "text", "truncated-png", "truncated-jpeg", "jpeg-header-only", "bad-png-header",
         "gif"],
)
def test_decode_refuses_bad_files(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        decode_image(data, 1_000_000)
    assert err.value.field == "file" and 400 <= err.value.status < 500


def test_decode_refuses_pixel_bombs_from_the_header() -> None:
    big = encode(Image.new("1", (12000, 12000)), "PNG")  # 144 MP of 1-bit pixels, a few kB compressed
    assert len(big) < 100_000
    with pytest.raises(InputError, match="MP"):
        decode_image(big, 50_000_000)


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"conf": "1.5"}, "conf"), ({"conf": "-0.1"}, "conf"), ({"conf": "nan"}, "conf"), ({"conf": "high"}, "conf"),
        ({"iou": "2"}, "iou"), ({"imgsz": "100"}, "imgsz"), ({"imgsz": "65536"}, "imgsz"), ({"imgsz": "x"}, "imgsz"),
        ({"decimals": "-1"}, "decimals"), ({"normalize": "maybe"}, "normalize"), ({"colour": "red"}, "colour"),
        ({"vid_stride": "2"}, "vid_stride"), ({"bits": "16"}, "bits"),
    ],
)
def test_params_refuse_bad_values_naming_the_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_params(form, INFO, max_imgsz=2048)
    assert err.value.field == field and field in err.value.message


def test_params_defaults_and_values() -> None:
    assert parse_params({}, INFO, 2048) == parse_params({"conf": "0.25", "iou": "0.7"}, INFO, 2048)
    p = parse_params({"conf": "0", "iou": "1", "imgsz": "320", "normalize": "true", "decimals": "2"}, INFO, 2048)
    assert (p.conf, p.iou, p.imgsz, p.normalize, p.decimals) == (0.0, 1.0, (320, 320), True, 2)


def test_params_fixed_shape_models_only_take_their_size() -> None:
    fixed = ModelInfo(**{**INFO.__dict__, "dynamic": False})
    assert parse_params({"imgsz": "640"}, fixed, 2048).imgsz == (640, 640)
    with pytest.raises(InputError, match="fixed 640x640"):
        parse_params({"imgsz": "320"}, fixed, 2048)


def test_server_keeps_freed_buffers_in_the_heap_on_glibc() -> None:
    """The image runs on glibc (python:3.11-slim): the allocator knobs the server sets must be accepted there."""
    from inference_service.allocator import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("only glibc has mallopt's mmap/trim thresholds")
    assert keep_freed_memory()


