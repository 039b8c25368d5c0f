"""The compiled letterbox kernel (letterbox.c, and jpeg_letterbox.c where libjpeg is): how it is built, and how
the server loads it.

``python inference_service/native.py`` compiles it into ``_letterbox.so`` next to this file with the system C
compiler; the Dockerfile does that in a build stage, ``make test`` and ``make serve`` for a checkout. Without
the library the server falls back to the numpy port in resize.py (same tensor, ~8 ms slower per camera image)
and says so in its start-up log. Without libjpeg's headers (Debian's libjpeg-dev) the library is built without
jpeg_letterbox.c: the server then decodes every JPEG before letterboxing it (same tensor, 0.8-1.0 ms slower for a
lone request). Stdlib only at import: the image's build stage has a compiler but no numpy.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "letterbox.c"
JPEG_SOURCE = HERE / "jpeg_letterbox.c"
LIBRARY = HERE / "_letterbox.so"
# Portable x86-64/arm64 code, no -march=native: the image is built on one machine and runs on Cloud Run's.
CFLAGS = ("-O3", "-std=c11", "-Wall", "-Werror", "-fPIC", "-shared")
# libjpeg is looked for next to the library first: the image copies the build stage's libjpeg.so.62 there.
JPEG_LINK = ("-ljpeg", "-lpthread", "-Wl,-rpath,$ORIGIN")
JPEG_PROBE = ("#include <stdio.h>\n#include <jpeglib.h>\n"
              "int main(void) { struct jpeg_error_mgr e; jpeg_std_error(&e); return 0; }\n")
JPEG_HINT = "libjpeg's headers are missing: apt-get install libjpeg-dev (Debian/Ubuntu)"

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH; set CC")
    return cc


def has_libjpeg(cc: str) -> bool:
    """Whether a program using libjpeg compiles and links here: its headers and its library are installed."""
    probe = subprocess.run([cc, "-x", "c", "-", "-ljpeg", "-o", os.devnull], input=JPEG_PROBE, text=True,
                           capture_output=True)
    return probe.returncode == 0


def build(out: Path = LIBRARY, defines: tuple[str, ...] = (), jpeg: bool | None = None) -> Path:
    """Compile letterbox.c, and jpeg_letterbox.c if ``jpeg`` (default: where libjpeg is installed), into ``out``
    with the preprocessor ``defines`` (``LETTERBOX_NO_AVX2`` leaves the AVX2 passes out); raises
    CalledProcessError with the compiler's message on failure, FileNotFoundError for ``jpeg`` without libjpeg."""
    cc = compiler()
    if jpeg is None:
        jpeg = has_libjpeg(cc)
    elif jpeg and not has_libjpeg(cc):
        raise FileNotFoundError(JPEG_HINT)
    sources, link = ((SOURCE, JPEG_SOURCE), JPEG_LINK) if jpeg else ((SOURCE,), ())
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, *CFLAGS, *(f"-D{d}" for d in defines), "-o", str(tmp), *map(str, sources), *link],
                   check=True)
    tmp.replace(out)  # never a half-written library where the server looks
    return out


def has_jpeg(lib: ctypes.CDLL) -> bool:
    """Whether the library was built with jpeg_letterbox.c."""
    return hasattr(lib, "jpeg_letterbox")


def load(path: Path = LIBRARY) -> ctypes.CDLL | None:
    """The kernel, or None if it was not built. ctypes drops the GIL around each call."""
    if not path.exists():
        return None
    lib = ctypes.CDLL(str(path))
    lib.letterbox_rows.restype = ctypes.c_int
    lib.letterbox_rows.argtypes = [_PTR, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64,
                                   _I64, _PTR, _I64, _I64]
    lib.letterbox_avx2.restype = ctypes.c_int
    lib.letterbox_avx2.argtypes = []
    if has_jpeg(lib):
        lib.jpeg_letterbox.restype = ctypes.c_int
        lib.jpeg_letterbox.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64,
                                       _I64, _PTR, _I64, _I64, ctypes.c_int, ctypes.c_char_p, _I64]
    return lib


def main(argv: list[str]) -> int:
    """Build, printing the library's path; ``--require-jpeg`` (the image's build) fails without libjpeg instead of
    building without it. A missing compiler or libjpeg, or a compile error, is one message, exit 1."""
    require_jpeg = "--require-jpeg" in argv
    paths = [a for a in argv if a != "--require-jpeg"]
    try:
        jpeg = require_jpeg or has_libjpeg(compiler())
        print(build(Path(paths[0]) if paths else LIBRARY, jpeg=jpeg))
        if not jpeg:
            print(f"native.py: built without jpeg_letterbox.c ({JPEG_HINT}); JPEGs are decoded, then letterboxed",
                  file=sys.stderr)
    except FileNotFoundError as e:
        print(f"native.py: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"native.py: the C compiler failed (exit {e.returncode}), see its message above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
