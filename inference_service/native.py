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
import logging
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
JPEG_LINK = ("-ljpeg", "-lpthread")
JPEG_HINT = ("jpeg_letterbox.c needs libjpeg-turbo's headers and library: apt-get install libjpeg-dev "
             "(Debian/Ubuntu; Linux only)")

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH; set CC")
    return cc


def build(out: Path = LIBRARY, defines: tuple[str, ...] = (), jpeg: bool | None = None) -> Path:
    """Compile letterbox.c, with jpeg_letterbox.c per ``jpeg``, into ``out`` with the preprocessor ``defines``
    (``LETTERBOX_NO_AVX2`` leaves the AVX2 passes out). ``jpeg``: True requires it, None (default) adds it where it
    builds (libjpeg-turbo installed: the source checks what it needs), False leaves it out. Raises
    CalledProcessError with the compiler's message (in ``stderr``) on failure."""
    cc = compiler()
    if jpeg is not False:
        try:
            return _compile(cc, out, defines, (SOURCE, JPEG_SOURCE), JPEG_LINK)
        except subprocess.CalledProcessError:
            if jpeg:
                raise
    return _compile(cc, out, defines, (SOURCE,), ())


def _compile(cc: str, out: Path, defines: tuple[str, ...], sources: tuple[Path, ...], link: tuple[str, ...]) -> Path:
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, *CFLAGS, *(f"-D{d}" for d in defines), "-o", str(tmp), *map(str, sources), *link],
                   check=True, capture_output=True, text=True)
    tmp.replace(out)  # never a half-written library where the server looks
    return out


def has_jpeg(lib: ctypes.CDLL) -> bool:
    """Whether the library was built with jpeg_letterbox.c."""
    return hasattr(lib, "jpeg_letterbox")


def load(path: Path = LIBRARY) -> ctypes.CDLL | None:
    """The kernel, or None if it was not built. ctypes drops the GIL around each call."""
    if not path.exists():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # built with libjpeg, which is gone since: the numpy port still serves
        logging.getLogger("inference_service").warning("letterbox kernel %s does not load (%s): rebuild it with "
                                                       "python inference_service/native.py", path.name, e)
        return None
    lib.letterbox_rows.restype = ctypes.c_int
    lib.letterbox_rows.argtypes = [_PTR, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64,
                                   _I64, _PTR, _I64, _I64]
    lib.letterbox_avx2.restype = ctypes.c_int
    lib.letterbox_avx2.argtypes = []
    if has_jpeg(lib):
        lib.jpeg_letterbox.restype = ctypes.c_int
        lib.jpeg_letterbox.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64,
                                       _I64, _PTR, _I64, _I64, ctypes.c_int]
    return lib


def main(argv: list[str]) -> int:
    """Build, printing the library's path; ``--require-jpeg`` (the image's build) fails without libjpeg-turbo instead
    of building without jpeg_letterbox.c. A missing compiler or libjpeg, or a compile error, is one message (after
    the compiler's), exit 1."""
    require_jpeg = "--require-jpeg" in argv
    paths = [a for a in argv if a != "--require-jpeg"]
    try:
        out = build(Path(paths[0]) if paths else LIBRARY, jpeg=True if require_jpeg else None)
    except FileNotFoundError as e:
        print(f"native.py: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(e.stderr, end="", file=sys.stderr)
        hint = f"; {JPEG_HINT}" if require_jpeg else ""
        print(f"native.py: the C compiler failed (exit {e.returncode}){hint}", file=sys.stderr)
        return 1
    print(out)
    lib = load(out)
    if lib is not None and not has_jpeg(lib):
        print(f"native.py: built without jpeg_letterbox.c ({JPEG_HINT}); JPEGs are decoded, then letterboxed",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
