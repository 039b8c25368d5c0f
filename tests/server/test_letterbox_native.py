"""The C letterbox kernel (inference_service/letterbox.c) against the numpy port and ultralytics' own LetterBox.

The kernel is compiled from the current source into a temporary directory, so these tests never judge a stale
library; the server and the benchmarks load the one ``make`` builds next to native.py. Every kernel test runs
twice: on the library as built (its AVX2 passes, on a CPU that has AVX2) and on one built without them (the SSE2
and scalar passes that other CPUs run).
"""

from __future__ import annotations

import ctypes
import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ultralytics.data.augment import LetterBox

from inference_service import native
from inference_service.decode import decode_image
from inference_service.letterbox import NATIVE, _letterbox_band, letterbox_shape, preprocess
from inference_service.resize import resize_plan
from tests.helpers_server import ultralytics_assets


def cpu_has_avx2() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "avx2" in cpuinfo.read_text().split()


@pytest.fixture(scope="module", params=["as-built", "without-avx2"])
def kernel_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    defines = ("LETTERBOX_NO_AVX2",) if request.param == "without-avx2" else ()
    path = native.build(tmp_path_factory.mktemp("native") / "_letterbox.so", defines)
    lib = native.load(path)
    assert lib is not None
    assert lib.letterbox_avx2() == (request.param == "as-built" and cpu_has_avx2())
    return path


@pytest.fixture(scope="module")
def kernel(kernel_path: Path) -> ctypes.CDLL:
    lib = native.load(kernel_path)
    assert lib is not None
    return lib


# Each image ends where an unreadable page begins: a read past its last byte is a segfault, so it runs in a
# process of its own. Widths that end in the wide run, in its tail, enlarged, shrunk, one pixel.
GUARDED = """
import ctypes, mmap, sys
from pathlib import Path
import numpy as np
from inference_service import native
from inference_service.letterbox import preprocess
kernel, libc = native.load(Path(sys.argv[1])), ctypes.CDLL(None)
for h, w, size in [(1080, 810, 640), (100, 37, 160), (7, 1000, 640), (300, 301, 160), (50, 3000, 640), (1, 1, 32)]:
    nbytes = h * w * 3
    pages = -(-nbytes // mmap.PAGESIZE) + 1
    region = mmap.mmap(-1, pages * mmap.PAGESIZE)
    guard = ctypes.addressof(ctypes.c_char.from_buffer(region)) + (pages - 1) * mmap.PAGESIZE
    assert libc.mprotect(ctypes.c_void_p(guard), mmap.PAGESIZE, 0) == 0  # PROT_NONE
    image = np.frombuffer(region, np.uint8, nbytes, (pages - 1) * mmap.PAGESIZE - nbytes).reshape(h, w, 3)
    image[...] = np.random.default_rng(h + w).integers(0, 256, image.shape, dtype=np.uint8)
    out, _ = preprocess(image, (size, size), 32, True, kernel=kernel)
    ref, _ = preprocess(np.array(image), (size, size), 32, True, kernel=None)
    assert np.array_equal(out, ref), (h, w)
print("ok")
"""


def test_kernel_never_reads_past_the_image(kernel_path: Path) -> None:
    """The wide passes read whole words: none may reach past the last source byte (the server's image buffers
    end wherever the decoder's allocation does)."""
    run = subprocess.run([sys.executable, "-c", GUARDED, str(kernel_path)], capture_output=True, text=True,
                         cwd=Path(native.__file__).parents[1], timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 1500), w=st.integers(1, 1500), size=st.sampled_from([32, 160, 320, 640, 1280]),
       auto=st.booleans(), transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_tensor_is_the_numpy_tensor(kernel: ctypes.CDLL, h: int, w: int, size: int, auto: bool,
                                           transposed: bool, seed: int) -> None:
    """Shrinking, enlarging, padding, a 1-pixel image, a transposed (EXIF-rotated) array: the same floats."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if transposed:
        image = image.transpose(1, 0, 2)
    ref, lb_ref = preprocess(image, (size, size), 32, auto, kernel=None)
    out, lb = preprocess(image, (size, size), 32, auto, kernel=kernel)
    assert lb == lb_ref
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("shape", [(1080, 810), (481, 640), (37, 1000), (2000, 30)])
def test_kernel_rows_in_any_split_are_the_same_tensor(kernel: ctypes.CDLL, shape: tuple[int, int]) -> None:
    """A call for rows y0..y1 reads every source row those rows need, in its own buffers: any split of the
    rows, done call by call, gives the one-call tensor."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    one, _ = preprocess(image, (640, 640), 32, True, kernel=kernel)
    new_w, new_h, top, _, left, _ = letterbox_shape(shape, (640, 640), 32, True)
    plan, flat = resize_plan(*shape, new_h, new_w, 3), image.reshape(shape[0], -1)
    for bands in (2, 3, 7):
        planes = np.empty((3, new_h, new_w), dtype=np.float32)
        edges = [round(i * new_h / bands) for i in range(bands + 1)]
        for y0, y1 in itertools.pairwise(edges):
            _letterbox_band(flat, plan, y0, y1, planes, kernel)
        assert np.array_equal(planes, one[0, :, top : top + new_h, left : left + new_w]), bands


def test_kernel_tensor_equals_ultralytics_on_bus(kernel: ctypes.CDLL) -> None:
    """What ultralytics feeds the model for bus.jpg (cv2 decode, LetterBox, BGR->RGB, /255), bit for bit."""
    bgr = cv2.imread(str(ultralytics_assets() / "bus.jpg"))
    ref = LetterBox((640, 640), auto=True, stride=32)(image=bgr)[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)
    rgb = decode_image((ultralytics_assets() / "bus.jpg").read_bytes(), 50_000_000)
    tensor, _ = preprocess(rgb, (640, 640), 32, auto=True, kernel=kernel)
    np.testing.assert_array_equal(tensor, ref)


def test_every_byte_value_scales_to_numpys_float32_division_by_255(kernel: ctypes.CDLL) -> None:
    """The kernel's 0..1 floats are what torch's and numpy's float32 ``/ 255`` give, for each byte value: two
    equal rows of 0..255 halved vertically come out as the values themselves."""
    image = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (2, 256, 3))
    planes = np.empty((3, 1, 256), dtype=np.float32)
    _letterbox_band(np.ascontiguousarray(image).reshape(2, -1), resize_plan(2, 256, 1, 256, 3), 0, 1, planes, kernel)
    np.testing.assert_array_equal(planes, np.broadcast_to(np.arange(256, dtype=np.float32) / np.float32(255),
                                                          (3, 1, 256)))


def test_the_checkout_has_the_kernel_built() -> None:
    """``make test``/``make serve`` build it, so servers started by the tests and benchmarks use it."""
    assert NATIVE is not None, f"{native.LIBRARY} is missing: run `make` or `python inference_service/native.py`"


def test_the_built_kernel_takes_the_avx2_passes_where_the_cpu_has_them() -> None:
    """The library is portable x86-64 code that picks its AVX2 passes at run time (~40% faster on bus.jpg)."""
    assert NATIVE is not None
    assert NATIVE.letterbox_avx2() == cpu_has_avx2()


def test_a_missing_library_means_the_numpy_port(tmp_path: Path) -> None:
    assert native.load(tmp_path / "nothing.so") is None


def test_a_failed_build_leaves_the_working_library_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = native.build(tmp_path / "_letterbox.so")
    before = out.read_bytes()
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    with pytest.raises(subprocess.CalledProcessError):
        native.build(out)
    assert out.read_bytes() == before and native.load(out) is not None
