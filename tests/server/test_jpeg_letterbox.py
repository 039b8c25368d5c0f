"""JPEGs decoded straight into the letterbox on a spare CPU (inference_service/jpeg_letterbox.c): the tensor of
decoding with simplejpeg and then letterboxing, bit for bit, for every kind of JPEG; the same errors for bad data;
no thread left behind; and the fallbacks where it does not apply (no libjpeg at build time, EXIF rotation, CMYK).

The library is compiled from the current sources into a temporary directory, as in test_letterbox_native.py.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inference_service import native
from inference_service.decode import decode_image, open_image
from inference_service.errors import InputError
from inference_service.letterbox import describe_kernel, preprocess, preprocess_upload
from inference_service.resize import resize_plan
from tests.helpers_server import encode, sample_images, spare_cpu

MAX_PIXELS = 50_000_000


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    try:
        lib = native.load(native.build(tmp_path_factory.mktemp("native") / "_letterbox.so", jpeg=True))
    except subprocess.CalledProcessError as e:
        pytest.fail(f"{native.JPEG_HINT}: the JPEG path cannot be built or tested here\n{e.stderr}")
    assert lib is not None and native.has_jpeg(lib)
    return lib


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An RGB crop of bus.jpg resized to h x w with a little noise: edges, flat areas and colour, as photos have."""
    bus = decode_image(sample_images()[0].read_bytes(), MAX_PIXELS)
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, 400), rng.integers(0, 300)
    crop = cv2.resize(bus[y : y + 600, x : x + 500], (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(crop.astype(np.int16) + rng.integers(-6, 7, crop.shape), 0, 255).astype(np.uint8)


def cv2_jpeg(rgb: np.ndarray, sampling: int, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality,
                                                    cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling])
    assert ok
    return buf.tobytes()


def corpus() -> dict[str, bytes]:
    """Real photos, the demo samples, and every chroma subsampling, progressive, grey and odd sizes."""
    cases = {p.name: p.read_bytes() for p in sample_images() if p.suffix == ".jpg"}
    rgb = Image.fromarray(photo(481, 641))
    for sub in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
        cases[f"pil-subsampling-{sub}"] = encode(rgb, "JPEG", quality=88, subsampling=sub)
        cases[f"pil-progressive-{sub}"] = encode(rgb, "JPEG", quality=75, subsampling=sub, progressive=True)
    cases["pil-optimized"] = encode(rgb, "JPEG", quality=95, optimize=True)
    cases["grey"] = encode(rgb.convert("L"), "JPEG", quality=90)
    for name, factor in (("4:4:0", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440),
                         ("4:1:1", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411)):
        cases[f"cv2-{name}"] = cv2_jpeg(photo(333, 517, 1), factor)
    for h, w in ((1, 1), (7, 13), (17, 33), (1000, 37), (31, 1500)):
        cases[f"odd-{h}x{w}"] = encode(Image.fromarray(photo(h, w, h + w)), "JPEG", quality=85)
    return cases


CORPUS = corpus()


def both_paths(data: bytes, imgsz: tuple[int, int], auto: bool, kernel: ctypes.CDLL,
               cpu: int | None) -> tuple[np.ndarray, np.ndarray]:
    upload = open_image(data, MAX_PIXELS)
    fused, lb = preprocess_upload(upload, imgsz, 32, auto, spare_cpu=cpu, kernel=kernel)
    plain, plain_lb = preprocess(decode_image(data, MAX_PIXELS), imgsz, 32, auto, kernel=kernel)
    assert lb == plain_lb
    return fused, plain


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize(("imgsz", "auto"), [((640, 640), True), ((320, 320), False), ((1280, 1280), True)])
def test_the_tensor_is_the_decode_then_letterbox_tensor(kernel: ctypes.CDLL, name: str, imgsz: tuple[int, int],
                                                         auto: bool) -> None:
    """Downscaled, padded to the full size, and upscaled (where every decoded pixel shows in the tensor)."""
    fused, plain = both_paths(CORPUS[name], imgsz, auto, kernel, spare_cpu())
    np.testing.assert_array_equal(fused, plain)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 900), w=st.integers(1, 900), quality=st.integers(5, 100), sub=st.sampled_from([0, 1, 2]),
       progressive=st.booleans(), seed=st.integers(0, 1000))
def test_any_jpeg_gives_the_same_tensor(kernel: ctypes.CDLL, h: int, w: int, quality: int, sub: int,
                                        progressive: bool, seed: int) -> None:
    data = encode(Image.fromarray(photo(h, w, seed)), "JPEG", quality=quality, subsampling=sub,
                  progressive=progressive)
    fused, plain = both_paths(data, (640, 640), True, kernel, spare_cpu())
    np.testing.assert_array_equal(fused, plain)


def test_without_a_helper_thread_the_tensor_is_the_same(kernel: ctypes.CDLL) -> None:
    """A CPU the process may not use: the helper cannot run there and the caller letterboxes after the decode."""
    not_ours = max(os.sched_getaffinity(0)) + 1
    fused, plain = both_paths(CORPUS["bus.jpg"], (640, 640), True, kernel, not_ours)
    np.testing.assert_array_equal(fused, plain)


def outcome(fn: Callable[[], object]) -> str:
    """What the client would get: the 422's message, or "decoded"."""
    try:
        fn()
    except InputError as e:
        assert e.field == "file"
        return str(e)
    return "decoded"


def damaged() -> dict[str, bytes]:
    bus = CORPUS["bus.jpg"]
    progressive = CORPUS["pil-progressive-2"]
    scan = bus.index(b"\xff\xda")  # start of scan: after it, entropy-coded data
    return {
        "truncated-in-the-scan": bus[: scan + 5000],
        "truncated-at-the-scan": bus[: scan + 20],
        "progressive-truncated": progressive[: len(progressive) // 2],
        "garbage-in-the-scan": bus[: scan + 3000] + bytes(range(256)) * 8 + bus[scan + 5048 :],
        "no-end-marker": bus[:-2],
        "trailing-bytes": bus + b"\x00" * 100,
    }


@pytest.mark.parametrize("name", sorted(damaged()))
def test_damaged_data_fails_or_decodes_exactly_as_simplejpeg_does(kernel: ctypes.CDLL, name: str) -> None:
    """The server's answer to a damaged upload (a 422 and its message, or a result) does not depend on which path
    decoded it: what libjpeg refuses goes to simplejpeg, which has the last word."""
    data = damaged()[name]
    upload = open_image(data, MAX_PIXELS)
    fused = outcome(lambda: preprocess_upload(upload, (640, 640), 32, True, spare_cpu=spare_cpu(), kernel=kernel))
    assert fused == outcome(lambda: preprocess(decode_image(data, MAX_PIXELS), (640, 640), 32, True, kernel=kernel))
    if fused == "decoded":
        np.testing.assert_array_equal(*both_paths(data, (640, 640), True, kernel, spare_cpu()))


def lossless_jpeg(rgb: np.ndarray) -> bytes:
    """A lossless JPEG (SOF3, predictor 1, one Huffman table of 17 five-bit codes): libjpeg-turbo decodes these from
    3.0 on, so simplejpeg's bundled 3.1 does and Debian 12's 2.1 does not."""
    h, w, nc = rgb.shape
    sof = struct.pack(">BHHB", 8, h, w, nc) + b"".join(bytes([i + 1, 0x11, 0]) for i in range(nc))
    dht = bytes([0]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([nc]) + b"".join(bytes([i + 1, 0]) for i in range(nc)) + bytes([1, 0, 0])
    out = bytearray(b"\xff\xd8\xff\xc3" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xc4"
                    + struct.pack(">H", len(dht) + 2) + dht + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos)
    bits, acc, data = 0, 0, bytearray()

    def put(value: int, n: int) -> None:
        nonlocal bits, acc
        acc, bits = (acc << n) | (value & ((1 << n) - 1)), bits + n
        while bits >= 8:
            bits -= 8
            data.append((acc >> bits) & 0xFF)
            if data[-1] == 0xFF:
                data.append(0)

    x = rgb.astype(np.int32)
    for r in range(h):
        for c in range(w):
            for k in range(nc):
                pred = 128 if r == c == 0 else x[r - 1, c, k] if c == 0 else x[r, c - 1, k]
                d = int(x[r, c, k] - pred)
                size = abs(d).bit_length()
                put(size, 5)
                if size:
                    put(d if d > 0 else d - 1, size)
    if bits:
        put((1 << (8 - bits)) - 1, 8 - bits)
    return bytes(out + data + b"\xff\xd9")


def test_a_jpeg_this_libjpeg_refuses_is_decoded_as_simplejpeg_decodes_it(kernel: ctypes.CDLL) -> None:
    """simplejpeg bundles a newer libjpeg-turbo than the kernel links: a lossless JPEG, which only the newer one
    decodes, is served all the same (it was refused whenever a request happened to be alone)."""
    rgb = photo(60, 80)
    data = lossless_jpeg(rgb)
    np.testing.assert_array_equal(decode_image(data, MAX_PIXELS), rgb)
    assert open_image(data, MAX_PIXELS).plain_jpeg
    dst = np.empty((3, 480, 640), np.float32)
    plan = resize_plan(60, 80, 480, 640, 3)
    assert kernel.jpeg_letterbox(data, len(data), 60, 80, plan.ys0.ctypes.data, plan.ys1.ctypes.data,
                                 plan.b0.ctypes.data, plan.b1.ctypes.data, plan.ix0.ctypes.data, plan.ix1.ctypes.data,
                                 plan.a0.ctypes.data, plan.a1.ctypes.data, 640, 480, dst.ctypes.data, 480 * 640, 640,
                                 -1) == -2, "this libjpeg decodes lossless JPEGs now: the case no longer tests anything"
    np.testing.assert_array_equal(*both_paths(data, (640, 640), True, kernel, spare_cpu()))


def threads() -> int:
    return int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("Threads:")).split()[1])


def test_one_helper_thread_serves_every_call(tmp_path: Path) -> None:
    """The helper starts with the first call and is kept: 200 calls later, a fifth of them on damaged data that
    stops the decode midway, the process has that one thread more, not one per call or per failure."""
    lib = native.load(native.build(tmp_path / "_letterbox.so", jpeg=True))
    before = threads()
    bad = damaged()["truncated-in-the-scan"]
    for i in range(200):
        data = bad if i % 5 == 0 else CORPUS["shapes-1.jpg"]
        outcome(lambda d=data: preprocess_upload(open_image(d, MAX_PIXELS), (640, 640), 32, True,  # type: ignore[misc]
                                                 spare_cpu=spare_cpu(), kernel=lib))
        if i == 0:
            assert threads() == before + 1
    assert threads() == before + 1


def test_concurrent_calls_share_the_helper_or_letterbox_themselves(kernel: ctypes.CDLL) -> None:
    """Two requests decoding at once (the server gives only a lone one a spare CPU, but a library must not care):
    the one that finds the helper busy letterboxes its own rows, and every tensor is right."""
    data = CORPUS["bus.jpg"]
    expected = preprocess(decode_image(data, MAX_PIXELS), (640, 640), 32, True, kernel=kernel)[0]

    def calls() -> list[bool]:
        return [np.array_equal(preprocess_upload(open_image(data, MAX_PIXELS), (640, 640), 32, True,
                                                 spare_cpu=spare_cpu(), kernel=kernel)[0], expected)
                for _ in range(30)]

    with ThreadPoolExecutor(3) as pool:
        results = [f.result() for f in [pool.submit(calls) for _ in range(3)]]
    assert all(all(r) for r in results)


def test_rotated_and_cmyk_jpegs_are_decoded_then_letterboxed(kernel: ctypes.CDLL) -> None:
    """What libjpeg alone cannot give (an EXIF orientation to undo, CMYK) takes the decode-then-letterbox path,
    upright and the right way round."""
    rgb = Image.fromarray(photo(300, 500))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    rotated = encode(rgb, "JPEG", quality=90, exif=exif.tobytes())
    cmyk = encode(rgb.convert("CMYK"), "JPEG", quality=90)
    assert not open_image(rotated, MAX_PIXELS).plain_jpeg and not open_image(cmyk, MAX_PIXELS).plain_jpeg
    tensor, lb = preprocess_upload(open_image(rotated, MAX_PIXELS), (640, 640), 32, True, spare_cpu=spare_cpu(),
                                   kernel=kernel)
    assert lb.orig_shape == (500, 300)
    np.testing.assert_array_equal(tensor, both_paths(rotated, (640, 640), True, kernel, spare_cpu())[1])
    np.testing.assert_array_equal(*both_paths(cmyk, (640, 640), True, kernel, spare_cpu()))


def test_a_library_built_without_libjpeg_decodes_then_letterboxes(tmp_path: Path) -> None:
    lib = native.load(native.build(tmp_path / "_letterbox.so", jpeg=False))
    assert lib is not None and not native.has_jpeg(lib)
    assert describe_kernel(lib) == "native"  # what the start-up log shows, with a warning naming the fix
    fused, plain = both_paths(CORPUS["bus.jpg"], (640, 640), True, lib, spare_cpu())
    np.testing.assert_array_equal(fused, plain)


@pytest.fixture
def cc_without_libjpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C compiler on a machine without libjpeg: any link with -ljpeg fails, as ld says when it is missing."""
    cc = tmp_path / "cc"
    cc.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -ljpeg ] && {{ echo "ld: cannot find -ljpeg" >&2; '
                  f'exit 1; }}; done\nexec {native.compiler()} "$@"\n')
    cc.chmod(cc.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(cc))


def test_without_libjpeg_the_build_says_so_and_the_image_build_fails(cc_without_libjpeg: None, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`make`: the kernel without jpeg_letterbox.c and a note with the install command; the image's build stage
    (--require-jpeg): one message, exit 1, never an image without it."""
    out = tmp_path / "k.so"
    assert native.main([str(out)]) == 0
    lib = native.load(out)
    assert lib is not None and not native.has_jpeg(lib)
    assert "apt-get install libjpeg-dev" in capsys.readouterr().err
    assert native.main(["--require-jpeg", str(tmp_path / "required.so")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ld: cannot find -ljpeg", f"native.py: the C compiler failed (exit 1); {native.JPEG_HINT}"]
    assert not (tmp_path / "required.so").exists()


def test_a_kernel_that_does_not_load_leaves_the_numpy_port(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A kernel built with libjpeg on a machine that no longer has it (or any unloadable file) is a warning naming
    the rebuild, and the server resizes with numpy: not an import error that stops it."""
    broken = tmp_path / "_letterbox.so"
    broken.write_bytes(b"not a shared library")
    assert native.load(broken) is None
    assert "does not load" in caplog.text and "native.py" in caplog.text


def test_the_checkout_kernel_has_the_jpeg_path() -> None:
    """`make test` and `make serve` build it with libjpeg here, so the servers the tests start take it."""
    proc = subprocess.run([sys.executable, "-c", "from inference_service import letterbox, native; "
                           "print(native.has_jpeg(letterbox.NATIVE))"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "True", f"rebuild it: python inference_service/native.py ({native.JPEG_HINT})"
