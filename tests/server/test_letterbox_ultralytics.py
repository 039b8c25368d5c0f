"""The letterbox tensor, pixel for pixel and pad for pad, against ultralytics' LetterBox on random images of many
sizes and aspect ratios (slivers, panoramas, upscales, one pixel), at the sizes clients ask for up to the server's
largest imgsz, with `auto` (minimal rectangle) and without. The whole tensor is compared, so the padding's side
and split (ultralytics puts the odd pixel bottom/right) count as much as the resize: bit for bit, shrinking or
enlarging, in both the C kernel and the numpy port."""

from __future__ import annotations

import numpy as np
import pytest
from ultralytics.data.augment import LetterBox

from inference_service import letterbox
from inference_service.settings import ServerSettings

MAX_IMGSZ = ServerSettings.model_fields["max_imgsz"].default  # the server's largest imgsz
SHAPES = [(1, 1), (1, 2000), (2000, 1), (7, 1999), (333, 1), (480, 640), (640, 480), (1080, 1920), (1919, 1081),
          (3000, 17), (31, 33), (641, 639), (100, 101), (2160, 3840)]
RNG = np.random.default_rng(19)
SHAPES += [tuple(int(v) for v in RNG.integers(2, 2500, 2)) for _ in range(8)]
SIZES = [320, 640, 1280, MAX_IMGSZ]
CASES = [(shape, SIZES[i % len(SIZES)], bool(i % 3)) for i, shape in enumerate(SHAPES)]
CASES += [((37 + i, 1500 - 97 * i), size, auto) for i, size in enumerate([96, 704, 1024, 1536])
          for auto in (True, False)]


def reference(rgb: np.ndarray, size: int, auto: bool) -> np.ndarray:
    """What ultralytics feeds its model: LetterBox on the BGR image, back to RGB, CHW, / 255."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = LetterBox((size, size), auto=auto, stride=32)(image=bgr)
    return (out[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


@pytest.mark.parametrize("native", [True, False], ids=["c-kernel", "numpy"])
def test_letterbox_tensor_equals_ultralytics(native: bool) -> None:
    if native and letterbox.NATIVE is None:
        pytest.fail("the C kernel is not built: run `python3 inference_service/native.py`")
    kernel = letterbox.NATIVE if native else None
    rng = np.random.default_rng(7)
    for shape, size, auto in CASES:
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        ref = reference(rgb, size, auto)
        tensor, lb = letterbox.preprocess(rgb, (size, size), 32, auto, kernel=kernel)
        where = f"{shape} imgsz {size} auto {auto}"
        assert tensor.shape == ref.shape and lb.input_shape == ref.shape[2:], where
        pad = np.isclose(ref, 114 / 255)
        # the grey border is where ultralytics puts it: whole rows and columns of it on the same sides
        rows, cols = pad.all(axis=(0, 1, 3)), pad.all(axis=(0, 1, 2))
        assert np.array_equal(np.isclose(tensor, 114 / 255).all(axis=(0, 1, 3)), rows), where
        assert np.array_equal(np.isclose(tensor, 114 / 255).all(axis=(0, 1, 2)), cols), where
        np.testing.assert_array_equal(tensor, ref, err_msg=where)
