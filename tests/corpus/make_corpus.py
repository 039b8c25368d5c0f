"""Writes the hostile-upload corpus beside this script: the files, manifest.yaml and README.md, from one table.

Run ``python tests/corpus/make_corpus.py`` after changing the table. Everything is built from fixed bytes,
a seeded generator and fixed dates, so a run reproduces the committed files with the same Pillow and zlib.
tests/server/test_hostile_input.py posts every file to a real server and expects the answer the manifest gives.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Entry:
    """One corpus file and the answer the server must give it."""

    name: str
    make: Callable[[], bytes]
    what: str
    status: int
    error: str | None = None  # a substring of the JSON "error"; None for a 200
    shape: tuple[int, int] | None = None  # (h, w) the server must report for a 200


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(w: int = 64, h: int = 48) -> Image.Image:
    """Random pixels compress badly, so cutting the file in half really cuts pixel data."""
    return Image.fromarray(np.random.default_rng(8).integers(0, 256, (h, w, 3), dtype=np.uint8))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w: int, h: int, rows: bytes, depth: int = 8, colour: int = 2, before_idat: bytes = b"") -> bytes:
    """A PNG written chunk by chunk, so its header may claim what no encoder would write."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(rows, 9))
    return b"\x89PNG\r\n\x1a\n" + ihdr + before_idat + idat + chunk(b"IEND", b"")


def bmp(w: int, h: int, bpp: int = 24, colours: int = 0, pixels: bytes = b"\0" * 16) -> bytes:
    """A BITMAPINFOHEADER BMP with whatever (signed) width, height and palette size it is given."""
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(pixels), 2835, 2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels


def jpeg_sized(w: int, h: int) -> bytes:
    """A real 16x16 JPEG whose start-of-frame is rewritten to claim ``w`` x ``h``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 160, 40)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def webp_canvas(w: int, h: int) -> bytes:
    """A VP8X (extended WebP) header claiming a ``w`` x ``h`` canvas, and no image data."""
    vp8x = b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_with_corrupt_exif() -> bytes:
    """A 16x8 JPEG rotated by EXIF orientation 6 whose XResolution tag is text instead of a rational."""
    tiff = (b"MM\0\x2a" + struct.pack(">IH", 8, 2)
            + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)  # Orientation: SHORT 6 (rotate 90 clockwise)
            + struct.pack(">HHI", 0x011A, 2, 4) + b"abc\0"  # XResolution: ASCII "abc" where a RATIONAL belongs
            + struct.pack(">I", 0))
    app1 = b"Exif\0\0" + tiff
    jpeg = encode(Image.new("RGB", (16, 8), (200, 30, 30)), "JPEG")
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def zip_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("payload.sh", date_time=(2020, 1, 1, 0, 0, 0)), "#!/bin/sh\nrm -rf ~\n")
    return buf.getvalue()


SCRIPT = b"<html><body><script>alert(document.domain)</script></body></html>\n"
MP = "over the 50 MP limit"
NOT_SUPPORTED = "not a supported image"

CORPUS = [
    Entry("zero-byte.jpg", lambda: b"", "an empty file", 422, "file is empty"),
    Entry("truncated.jpg", lambda: encode(noise(), "JPEG", quality=95)[:3000],
          "a 64x48 JPEG cut after 3000 bytes, mid-scan", 422, "could not be decoded"),
    Entry("truncated.png", lambda: encode(noise(), "PNG")[:4000], "a 64x48 PNG cut mid-IDAT", 422,
          "could not be decoded"),
    Entry("truncated.webp", lambda: encode(noise(), "WEBP")[:300], "a 64x48 WebP cut after 300 bytes", 422,
          "not a valid WEBP"),
    Entry("truncated.bmp", lambda: encode(noise(), "BMP")[:4000], "a 64x48 BMP cut mid-pixels", 422,
          "could not be decoded"),
    Entry("header-only.jpg", lambda: encode(noise(), "JPEG")[:20], "a JPEG's first 20 bytes: SOI and APP0 only",
          422, "not a valid JPEG"),
    Entry("polyglot-jpeg-html.jpg", lambda: b"\xff\xd8\xff\xe0" + SCRIPT,
          "JPEG magic bytes followed by an HTML page with a script", 422, "not a valid JPEG"),
    Entry("polyglot-bmp-html.bmp", lambda: b"BM" + SCRIPT, "'BM' followed by an HTML page", 422, "not a valid BMP"),
    Entry("polyglot-gif-js.gif", lambda: b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(1);//\x3b",
          "a GIF header that is also valid JavaScript", 422, NOT_SUPPORTED),
    Entry("polyglot-jpeg-zip.jpg", lambda: encode(noise(), "JPEG") + zip_archive(),
          "a valid 64x48 JPEG with a ZIP archive appended: decoded as the JPEG, the archive is never read", 200,
          shape=(48, 64)),
    Entry("polyglot-png-trailing.png", lambda: encode(noise(), "PNG") + b"<?php system($_GET['c']); ?>" + SCRIPT,
          "a valid 64x48 PNG with PHP and HTML after IEND: decoded as the PNG, the rest is never read", 200,
          shape=(48, 64)),
    Entry("bomb-100mp.png", lambda: png(10_000, 10_000, b"\0" * 10_000 * 1251, depth=1, colour=0),
          "a complete 10000x10000 1-bit PNG: 100 MP (300 MB as RGB) in a few kB", 422, MP),
    Entry("bomb-ztxt.png", lambda: png(1, 1, b"\0\0\0\0", before_idat=chunk(b"zTXt", b"c\0\0"
                                                                                  + zlib.compress(b"\0" * 2**23, 9))),
          "a 1x1 PNG with a zTXt text chunk inflating to 8 MiB", 422, "MAX_TEXT_CHUNK"),
    Entry("huge-dims.jpg", lambda: jpeg_sized(65_535, 65_535), "a JPEG whose frame header claims 65535x65535", 422,
          MP),
    Entry("huge-dims.png", lambda: png(2**31 - 1, 2**31 - 1, b"\0" * 4),
          "a PNG whose IHDR claims 2147483647x2147483647", 422, MP),
    Entry("huge-dims.webp", lambda: webp_canvas(2**24, 2**24), "a WebP whose VP8X header claims 16777216x16777216",
          422, "image is too large"),
    Entry("bomb-81mp.webp", lambda: encode(Image.new("RGB", (9_000, 9_000)), "WEBP", lossless=True, method=0),
          "a complete 9000x9000 lossless WebP: 81 MP (under Pillow's own cap, over ours) in 34 bytes", 422, MP),
    Entry("huge-dims.bmp", lambda: bmp(2**31 - 1, 2**31 - 1), "a BMP whose header claims 2147483647x2147483647", 422,
          MP),
    Entry("bmp-negative-width.bmp", lambda: bmp(-100, 100), "a BMP with width -100", 422, MP),
    Entry("bmp-negative-height.bmp", lambda: bmp(100, -(2**31)),
          "a top-down BMP with height -2147483648 (abs() overflows int32)", 422, MP),
    Entry("bmp-huge-palette.bmp", lambda: bmp(8, 8, bpp=8, colours=2**30), "an 8-bit BMP claiming 2^30 palette colours",
          422, "not a valid BMP"),
    Entry("png-zero-width.png", lambda: png(0, 10, b""), "a PNG whose IHDR claims 0x10", 422, "not a valid PNG"),
    Entry("text.jpg", lambda: b"name,score\nalice,3\n" * 10, "a CSV file named .jpg", 422, NOT_SUPPORTED),
    Entry("image.svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9" '
          b'height="9"/></svg>\n', "an SVG with an onload script", 422, NOT_SUPPORTED),
    Entry("image.tiff", lambda: encode(noise(16, 16), "TIFF"), "a valid 16x16 TIFF (not a served format)", 422,
          NOT_SUPPORTED),
    Entry("image.gif", lambda: encode(noise(16, 16).convert("P"), "GIF"), "a valid 16x16 GIF (not a served format)",
          422, NOT_SUPPORTED),
    Entry("panorama.png", lambda: encode(Image.new("RGB", (3000, 40), (120, 50, 50)), "PNG"),
          "a valid 3000x40 PNG: its minimal letterbox has too few anchors for the end-to-end export's top 300 "
          "(a 500 once); now padded to the full size", 200, shape=(40, 3000)),
    Entry("one-pixel.bmp", lambda: encode(Image.new("RGB", (1, 1), (255, 255, 255)), "BMP"), "a valid 1x1 BMP",
          200, shape=(1, 1)),
    Entry("corrupt-exif.jpg", jpeg_with_corrupt_exif,
          "a 16x8 JPEG, EXIF orientation 6, with a text XResolution tag: once a 500 (Pillow's exif_transpose "
          "re-serialised the EXIF); now rotated upright", 200, shape=(16, 8)),
]


def main() -> None:
    manifest = []
    lines = ["# Hostile uploads", "", "Made by `make_corpus.py` (which also writes `manifest.yaml`); posted one by one "
             "to a real server by `tests/server/test_hostile_input.py`. Every 4xx is JSON naming the field `file`. "
             "A 200 is an image that decodes; whatever follows it in the file is never read.", "",
             "| file | bytes | what it is | expected answer |", "| --- | --- | --- | --- |"]
    for e in CORPUS:
        data = e.make()
        (HERE / e.name).write_bytes(data)
        manifest.append({"file": e.name, "status": e.status, "field": "file" if e.status != 200 else None,
                         "error": e.error, "shape": list(e.shape) if e.shape else None, "what": e.what})
        answer = f'{e.status}, error contains "{e.error}"' if e.error else f"200, shape {list(e.shape or ())}"
        lines.append(f"| `{e.name}` | {len(data)} | {e.what} | {answer} |")
    (HERE / "manifest.yaml").write_text("# Written by make_corpus.py: edit its table, not this file.\n"
                                        + yaml.safe_dump(manifest, sort_keys=False, width=120))
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
