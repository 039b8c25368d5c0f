"""What a client sees for a bad or oversized upload: a 4xx naming the file and saying what is wrong with it (which
format it looked like, the megapixels against the limit), and that the limit is inclusive."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from inference_service import decode
from inference_service.decode import decode_image
from inference_service.errors import InputError
from tests.helpers_server import encode

PHOTO = Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8))


def refused(data: bytes, max_pixels: int = 1_000_000) -> str:
    with pytest.raises(InputError) as err:
        decode_image(data, max_pixels)
    assert err.value.field == "file" and err.value.status == 422
    return err.value.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_the_pixel_limit_is_inclusive(fmt: str) -> None:
    """An image of exactly ``max_pixels`` is decoded; one pixel fewer allowed and it is refused before decoding."""
    data = encode(PHOTO, fmt)
    assert decode_image(data, 600).shape == (20, 30, 3)
    assert refused(data, 599) == "image is 30x20 = 0.0 MP, over the 0.000599 MP limit"


@pytest.mark.parametrize(("size", "limit", "message"), [
    ((5000, 4000), 12_000_000, "image is 5000x4000 = 20.0 MP, over the 12 MP limit"),
    ((1500, 900), 1_000_000, "image is 1500x900 = 1.4 MP, over the 1 MP limit"),  # 1.35 MP rounds up
])
def test_the_limit_message_gives_width_height_and_megapixels(size: tuple[int, int], limit: int, message: str) -> None:
    assert refused(encode(Image.new("1", size), "PNG"), limit) == message


def test_pil_s_own_bomb_check_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """WebP checks PIL's pixel cap while opening: still a 400 saying the image is too large, not a 500."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert refused(encode(PHOTO, "WEBP"), 10**9).startswith("image is too large (Image size (600 pixels) exceeds")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20, "file is not a valid WEBP ("),
        (b"BM" + b"\0" * 40, "file is not a valid BMP ("),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "file is not a valid PNG ("),
        (b"\xff\xd8\xff" + b"\0" * 20, "file is not a valid JPEG ("),
        (b"RIFF\x10\0\0\0WAVEfmt " + b"\0" * 20, "file is not a supported image (JPEG, PNG, WEBP, BMP)"),
        (b"\xff\xd8\0" + b"\0" * 20, "file is not a supported image (JPEG, PNG, WEBP, BMP)"),
        (b"\x89PNG\r\n\x1a\0" + b"\0" * 20, "file is not a supported image (JPEG, PNG, WEBP, BMP)"),
        (b"\0", "file is not a supported image (JPEG, PNG, WEBP, BMP)"),
        (b"", "file is empty (0 bytes)"),
    ],
    ids=["webp-header", "bmp-header", "png-header", "jpeg-header", "riff-not-webp", "jpeg-magic-short",
         "png-magic-short", "one-byte", "empty"],
)
def test_bad_headers_name_the_format_they_claimed(data: bytes, message: str) -> None:
    assert refused(data).startswith(message)


@pytest.mark.parametrize(("fmt", "message"), [("BMP", "image could not be decoded ("),
                                             ("PNG", "image could not be decoded ("),
                                             ("JPEG", "image could not be decoded ("),
                                             ("WEBP", "file is not a valid WEBP (")])  # PIL decodes WebP at open
def test_truncated_files_are_refused(fmt: str, message: str) -> None:
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)), fmt)
    assert refused(data[: len(data) * 2 // 3]).startswith(message)


@pytest.mark.parametrize("orientation", [0, 9])
def test_an_orientation_outside_the_eight_leaves_the_image_as_stored(orientation: int) -> None:
    """OpenCV ignores an EXIF orientation it does not know, and so does the server."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(PHOTO, "JPEG", exif=exif, quality=95)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decode_image(data, 10**6), expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_other_modes_give_the_rgb_pixels_pil_gives(mode: str) -> None:
    data = encode(PHOTO.convert(mode), "PNG")
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, 10**6), expected)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1)])
def test_a_one_pixel_wide_image_is_an_image(fmt: str, size: tuple[int, int]) -> None:
    data = encode(PHOTO.resize(size), fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, 10**6), expected)


def test_an_image_without_rows_or_columns_is_refused_at_its_header() -> None:
    """A PNG claiming 0 x 3 pixels (valid checksum): refused as an invalid PNG, never an empty array."""
    data = bytearray(encode(PHOTO, "PNG"))
    struct.pack_into(">II", data, 16, 0, 3)  # IHDR width, height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    assert refused(bytes(data)).startswith("file is not a valid PNG (")


@pytest.mark.parametrize(("mode", "fast"), [("RGB", True), ("L", True), ("CMYK", False)])
def test_camera_jpegs_take_the_fast_decoder(monkeypatch: pytest.MonkeyPatch, mode: str, fast: bool) -> None:
    """Colour and grey JPEGs (what cameras send) are decoded by simplejpeg, ~35% faster than PIL and without the
    GIL; CMYK, which it cannot convert, by PIL. Same pixels either way (test_inference_core checks that)."""
    calls: list[bytes] = []
    real = simplejpeg.decode_jpeg

    def spy(data: bytes, **kwargs: str) -> np.ndarray:
        calls.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", spy)
    data = encode(PHOTO.convert(mode), "JPEG")
    assert decode_image(data, 10**6).shape == (20, 30, 3)
    assert calls == ([data] if fast else [])


def png_with_damaged_data() -> bytes:
    """A PNG whose compressed pixels are damaged mid-stream, its chunk checksum made right again (as a broken
    encoder, or a bit flip before the checksum was computed, would leave it)."""
    data = encode(PHOTO, "PNG")
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    body = bytearray(data[at + 8 : at + 8 + length])
    body[length // 2 : length // 2 + 40] = b"\xff" * 40
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    return data[: at + 8] + bytes(body) + crc + data[at + 12 + length :]


def test_a_png_with_damaged_pixel_data_is_refused_not_half_decoded() -> None:
    """PIL reads a PNG's EXIF by decoding it: that must not swallow the decode's error and leave a half-decoded
    image to be served as a 200."""
    assert refused(png_with_damaged_data()).startswith("image could not be decoded (")
