"""The letterbox tensor of small images, cheap enough to run for every planted bug, against ultralytics' LetterBox
(size, padding side and split, pixels), for both the numpy port and the C kernel; the anchor count that decides
when a minimal rectangle is too small for an end-to-end export, against the grid a stride-2 convolution stack
actually produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox

from inference_service import letterbox
from inference_service.letterbox import PAD_VALUE, grid_cells, letterbox_shape, preprocess
from inference_service.resize import resize_plan

KERNELS = {"numpy": None, "c-kernel": letterbox.NATIVE}
# (h, w) from slivers to squares, both orientations, odd sizes; shrunk, enlarged and kept by the imgsz below
SHAPES = [(1, 1), (2, 97), (97, 2), (33, 31), (64, 64), (100, 37), (37, 100), (250, 251), (301, 180), (5, 300)]
SIZES = [32, 64, 96, 160]


def ultralytics_tensor(rgb: np.ndarray, size: int | tuple[int, int], auto: bool) -> np.ndarray:
    """What ultralytics feeds its model: LetterBox on the BGR image, back to RGB, CHW, / 255."""
    shape = size if isinstance(size, tuple) else (size, size)
    out = LetterBox(shape, auto=auto, stride=32)(image=np.ascontiguousarray(rgb[..., ::-1]))
    return (out[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


@pytest.mark.parametrize("kernel", KERNELS, ids=list(KERNELS))
@pytest.mark.parametrize("auto", [True, False], ids=["auto", "square"])
def test_tensor_is_ultralytics_letterbox(kernel: str, auto: bool) -> None:
    """Same shape, grey border on the same sides split the same way, the same pixels, shrunk or enlarged."""
    if KERNELS[kernel] is None and kernel != "numpy":
        pytest.fail("the C kernel is not built: run `python3 inference_service/native.py`")
    rng = np.random.default_rng(auto)
    for i, shape in enumerate(SHAPES):
        for size in SIZES[i % 2 :: 2]:
            rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            ref = ultralytics_tensor(rgb, size, auto)
            tensor, lb = preprocess(rgb, (size, size), 32, auto, kernel=KERNELS[kernel])
            where = f"{shape} imgsz {size}"
            assert tensor.shape == ref.shape and lb.input_shape == ref.shape[2:], where
            assert lb.orig_shape == shape and tensor.dtype == np.float32, where
            np.testing.assert_array_equal(tensor, ref, err_msg=where)


@pytest.mark.parametrize("kernel", KERNELS, ids=list(KERNELS))
@pytest.mark.parametrize("imgsz", [(64, 96), (96, 64), (32, 160)])
def test_a_fixed_rectangular_input_is_ultralytics_letterbox(kernel: str, imgsz: tuple[int, int]) -> None:
    """Fixed-shape exports may take an (h, w) input that is not square: height and width are not interchangeable."""
    rng = np.random.default_rng(imgsz[0])
    for shape in [(100, 37), (37, 100), (120, 120), (50, 300)]:
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        for auto in (True, False):
            tensor, lb = preprocess(rgb, imgsz, 32, auto, kernel=KERNELS[kernel])
            np.testing.assert_array_equal(tensor, ultralytics_tensor(rgb, imgsz, auto), err_msg=f"{shape} {auto}")
            assert lb.input_shape == tensor.shape[2:]


@pytest.mark.parametrize("kernel", KERNELS, ids=list(KERNELS))
def test_one_column_of_padding_on_the_right_is_grey(kernel: str) -> None:
    """One pixel short of the input's width: the odd column goes to the right, and only there is it padded."""
    rgb = np.random.default_rng(8).integers(0, 256, (96, 95, 3), dtype=np.uint8)
    tensor, _ = preprocess(rgb, (96, 96), 32, False, kernel=KERNELS[kernel])
    assert (tensor[..., -1] == np.float32(PAD_VALUE / 255)).all()
    np.testing.assert_array_equal(tensor, ultralytics_tensor(rgb, 96, auto=False))


@pytest.mark.parametrize("auto", [True, False])
def test_padding_sides_and_split_are_ultralytics(auto: bool) -> None:
    """(new_w, new_h, top, bottom, left, right): the odd pixel of padding goes bottom/right, as upstream."""
    for h in range(1, 120, 7):
        for w in (1, 30, 45, 63, 64, 65, 130, 301):
            for size in (32, 96, 160):
                new_w, new_h, top, bottom, left, right = letterbox_shape((h, w), (size, size), 32, auto)
                ref = LetterBox((size, size), auto=auto, stride=32)(image=np.zeros((h, w, 3), np.uint8))
                image = ref[..., 0]
                assert image.shape == (new_h + top + bottom, new_w + left + right), (h, w, size)
                grey = image == PAD_VALUE
                assert grey[:top].all() and grey[image.shape[0] - bottom :].all(), (h, w, size)
                assert grey[:, :left].all() and grey[:, image.shape[1] - right :].all(), (h, w, size)
                assert not grey[top : top + new_h, left : left + new_w].any(), (h, w, size)


def anchors(h: int, w: int, stride: int) -> int:
    """Cells a YOLO head sees: the outputs of 3x3 stride-2 padded convolutions, one level per stride 8..stride."""
    x, cells, level = torch.zeros(1, 1, h, w), 0, 1
    weight = torch.zeros(1, 1, 3, 3)
    while level < stride:
        x, level = torch.nn.functional.conv2d(x, weight, stride=2, padding=1), level * 2
        if level >= 8:
            cells += x.shape[-2] * x.shape[-1]
    return cells


@pytest.mark.parametrize(("h", "w"), [(640, 640), (32, 640), (33, 65), (1, 1), (100, 37), (480, 2048)])
@pytest.mark.parametrize("stride", [32, 64])
def test_grid_cells_count_the_anchors_of_the_head(h: int, w: int, stride: int) -> None:
    assert grid_cells(h, w, stride) == anchors(h, w, stride)


@pytest.mark.parametrize("kernel", KERNELS, ids=list(KERNELS))
def test_a_rectangle_with_too_few_anchors_gets_the_full_square(kernel: str) -> None:
    """A panorama's minimal rectangle (32x640 here, 420 anchors) is padded to the full imgsz when the export's
    top-k needs more anchors; at exactly enough it keeps the rectangle."""
    rgb = np.random.default_rng(2).integers(0, 256, (10, 2000, 3), dtype=np.uint8)
    rect = ultralytics_tensor(rgb, 640, auto=True)
    assert rect.shape[2:] == (32, 640) and anchors(32, 640, 32) == 420
    tensor, lb = preprocess(rgb, (640, 640), 32, True, min_cells=420, kernel=KERNELS[kernel])
    np.testing.assert_array_equal(tensor, rect)
    tensor, lb = preprocess(rgb, (640, 640), 32, True, min_cells=421, kernel=KERNELS[kernel])
    np.testing.assert_array_equal(tensor, ultralytics_tensor(rgb, 640, auto=False))
    assert lb.input_shape == (640, 640)
    tensor, lb = preprocess(rgb, (640, 640), 32, False, min_cells=10**6, kernel=KERNELS[kernel])
    assert lb.input_shape == (640, 640)
    tall = np.ascontiguousarray(rgb.transpose(1, 0, 2))  # 640x32, its 29 columns of padding split 14 + 15
    tensor, lb = preprocess(tall, (640, 640), 32, True, min_cells=420, kernel=KERNELS[kernel])
    np.testing.assert_array_equal(tensor, ultralytics_tensor(tall, 640, auto=True))
    assert lb.input_shape == (640, 32)


def test_an_image_already_at_the_input_size_is_only_scaled() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    tensor, lb = preprocess(rgb, (96, 96), 32, True)
    assert lb.input_shape == (64, 96)
    np.testing.assert_array_equal(tensor[0], rgb.transpose(2, 0, 1) / np.float32(255))


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_arrays_the_kernel_is_not_written_for_take_the_numpy_port(dtype: type) -> None:
    """The kernel reads uint8 rows: another array of the same pixels gets the numpy port, so the same tensor."""
    image = np.random.default_rng(3).integers(0, 256, (150, 90, 3), dtype=np.uint8)
    ref, _ = preprocess(image, (64, 64), 32, False, kernel=None)
    out, _ = preprocess(image.astype(dtype), (64, 64), 32, False, kernel=letterbox.NATIVE)
    np.testing.assert_array_equal(out, ref)


class FailingKernel:
    """A kernel whose row buffers could not be allocated (malloc returned NULL)."""

    @staticmethod
    def letterbox_rows(*_: object) -> int:
        return -1


def test_a_kernel_out_of_memory_is_an_error_not_a_tensor() -> None:
    rgb = np.zeros((100, 100, 3), dtype=np.uint8)
    with pytest.raises(MemoryError, match=r"^letterbox kernel could not allocate its row buffers$"):
        preprocess(rgb, (64, 64), 32, False, kernel=FailingKernel())  # type: ignore[arg-type]


def planes(shape: tuple[int, ...] = (3, 8, 12), dtype: type = np.float32, step: int = 1) -> np.ndarray:
    return np.zeros((*shape[:2], shape[2] * step), dtype=dtype)[:, :, ::step]


def source(shape: tuple[int, int] = (16, 24), dtype: type = np.uint8, step: int = 1) -> np.ndarray:
    return np.zeros((shape[0], shape[1] * step), dtype=dtype)[:, ::step]


WRITES = r"the plan writes \(3, 8, 12\) float32 planes with contiguous rows"
READS = "the plan reads 16 rows of 24 contiguous bytes"
OVERRUNS = {  # rows, destination, source, the error
    "rows-past-the-end": ((0, 9), planes(), source(), "outside the plan's 8 rows"),
    "negative-row": ((-1, 4), planes(), source(), "outside the plan's 8 rows"),
    "rows-reversed": ((5, 4), planes(), source(), "outside the plan's 8 rows"),
    "short-destination": ((0, 8), planes((3, 7, 12)), source(), WRITES),
    "narrow-destination": ((0, 8), planes((3, 8, 11)), source(), WRITES),
    "float64-destination": ((0, 8), planes(dtype=np.float64), source(), WRITES),
    "strided-destination": ((0, 8), planes(step=2), source(), WRITES),
    "short-source": ((0, 8), planes(), source((15, 24)), READS),
    "narrow-source": ((0, 8), planes(), source((16, 23)), READS),
    "uint16-source": ((0, 8), planes(), source(dtype=np.uint16), READS),
    "strided-source": ((0, 8), planes(), source(step=2), READS),
}


@pytest.mark.parametrize("case", OVERRUNS)
def test_a_call_the_kernel_would_overrun_is_a_value_error(case: str) -> None:
    """The kernel reads and writes where it is told: a call outside the plan raises instead of crashing the server.
    The plan resizes a 16 x 8 RGB image (16 rows of 24 bytes) to 8 x 12 (three planes of 8 rows of 12 floats)."""
    kernel = letterbox.NATIVE
    assert kernel is not None, "make test builds the kernel"
    plan = resize_plan(16, 8, 8, 12, 3)
    rows, dst, src, message = OVERRUNS[case]
    with pytest.raises(ValueError, match=message):
        letterbox._letterbox_band(src, plan, *rows, dst, kernel)
    for y0, y1 in ((0, 8), (3, 3), (8, 8)):  # the plan's own sizes pass, empty bands too
        letterbox._letterbox_band(source(), plan, y0, y1, planes(), kernel)
