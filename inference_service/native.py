"""The compiled letterbox kernel (letterbox.c): how it is built, and how the server loads it.

``python inference_service/native.py`` compiles it into ``_letterbox.so`` next to this file with the system C
compiler; the Dockerfile does that in a build stage, ``make test`` and ``make serve`` for a checkout. Without
the library the server falls back to the numpy port in resize.py (same tensor, ~8 ms slower per camera image)
and says so in its start-up log. Stdlib only at import: the image's build stage has a compiler but no numpy.
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
LIBRARY = HERE / "_letterbox.so"
# Portable x86-64/arm64 code, no -march=native: the image is built on one machine and runs on Cloud Run's.
CFLAGS = ("-O3", "-std=c99", "-Wall", "-Werror", "-fPIC", "-shared")

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def build(out: Path = LIBRARY, defines: tuple[str, ...] = ()) -> Path:
    """Compile letterbox.c into ``out`` with the preprocessor ``defines`` (``LETTERBOX_NO_AVX2`` leaves the AVX2
    passes out); raises CalledProcessError with the compiler's message on failure."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH; set CC")
    tmp = out.with_suffix(".tmp")
    subprocess.run([cc, *CFLAGS, *(f"-D{d}" for d in defines), "-o", str(tmp), str(SOURCE)], check=True)
    tmp.replace(out)  # never a half-written library where the server looks
    return out


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
    return lib


def main() -> int:
    """Build, printing the library's path; a missing compiler or a compile error is one message, exit 1."""
    try:
        print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else LIBRARY))
    except FileNotFoundError as e:
        print(f"native.py: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"native.py: the C compiler failed (exit {e.returncode}), see its message above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
