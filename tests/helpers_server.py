"""Helpers for the inference server tests: models, images, key files and a real server process."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fleet.build_image import Engine, serve_args
from inference_service.auth import hash_key

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ARTIFACTS = ROOT / "tests" / "artifacts"
PYTHON = sys.executable


def demo_model(kind: str = "e2e") -> Path:
    """The committed demo model (``e2e`` or ``raw``): real weights, so parity is checked on real detections."""
    path = MODELS / f"demo-{kind}.onnx"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `python models/tools/train_demo_model.py`")
    return path


def ultralytics_assets() -> Path:
    import ultralytics  # dev dependency; its package ships bus.jpg and zidane.jpg

    return Path(ultralytics.__file__).parent / "assets"


def sample_images() -> list[Path]:
    """Real photographs plus the demo samples (which the demo model actually detects things in)."""
    assets = ultralytics_assets()
    return [assets / "bus.jpg", assets / "zidane.jpg", *sorted((MODELS / "samples").glob("shapes-*"))]


def spare_cpu() -> int:
    """A CPU for the letterbox helper thread, as a lone predict gets it (placement.py): the second CPU this process
    may use, or its only one (the helper then shares it, which still decodes and letterboxes correctly)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[1] if len(cpus) > 1 else cpus[0]


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_key_file(directory: Path) -> tuple[str, Path]:
    """A fresh key and the key file (its sha256 digest, one per line) the server reads."""
    key = secrets.token_urlsafe(24)
    path = directory / "sha256.txt"
    path.write_text(f"# test keys\n{hash_key(key)}\n{hash_key('another-key')}\n")
    return key, path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{base_url}/health not ready after {timeout} s")


@contextlib.contextmanager
def run_server(args: list[str], env: dict[str, str] | None = None, python: str = PYTHON,
               log_path: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m inference_service ARGS`` on a free loopback port; yields (base URL, process).

    The port goes in through ``PORT`` (as Cloud Run sets it) unless ``args`` name one.
    """
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "PYTHONPATH": str(ROOT), **(env or {})}
    if "--port" in args:
        port = int(args[args.index("--port") + 1])
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([python, "-m", "inference_service", "--host", "127.0.0.1", *args], env=full_env,
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, proc)
        yield base_url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()


def start_container(engine: Engine, tag: str, secrets_dir: Path, model_path: str | None = None,
                    timeout: float = 60) -> tuple[str, str, float]:
    """Run the server image (fleet/build_image.py serve_args) until /health is 200; (container id, base URL,
    seconds from `run` to the first 200). A container that stops or stays unhealthy fails with its log."""
    port = free_port()
    started = time.monotonic()
    cid = engine(*serve_args(tag, port, secrets_dir, model_path)).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return cid, url, time.monotonic() - started
        running = engine("inspect", "--format", "{{.State.Running}}", cid).stdout.strip()
        if running != "true" or time.monotonic() - started > timeout:
            log = engine("logs", cid, check=False)
            engine("rm", "-f", cid, check=False)
            raise RuntimeError(f"the container did not become healthy (running: {running}):\n"
                               f"{(log.stdout + log.stderr)[-3000:]}")
        time.sleep(0.02)


BOUNDARY = "hostile-b0undary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(parts: list[tuple[bytes, bytes | None, bytes]]) -> bytes:
    """A multipart/form-data body (for ``MULTIPART`` headers) from raw bytes, so that names, filenames and values
    may be anything, non-UTF-8 included, which httpx's ``files=``/``data=`` cannot send.
    Each part is (name, filename or None for a text field, content)."""
    out = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename else b"")
        out += b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + BOUNDARY.encode() + b"--\r\n"
