"""Start-up mistakes of the real ``python -m inference_service`` process: one line naming the problem, exit 2,
no traceback, no announced address."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_server import PYTHON, ROOT, demo_model

READY = "READY {url}"


def start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "inference_service", "--model", str(demo_model()), "--ready-message", READY,
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_plain_key_in_the_key_file_stops_start_up_saying_how_to_make_a_digest(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"{hashlib.sha256(b'ok').hexdigest()}\nmy-plain-secret-key\n")
    r = start("--port", "0", "--api-key-file", str(key_file))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line
    assert f"{key_file}:2: not a sha256 hex digest" in r.stderr
    assert 'printf %s "$KEY" | sha256sum' in r.stderr
    assert "my-plain-secret-key" not in r.stderr + r.stdout  # the secret is not echoed into logs
    assert "Traceback" not in r.stderr + r.stdout and "READY" not in r.stdout


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_busy_port_is_one_error_and_exit_2_before_anything_is_announced(busy_port: int, host: str) -> None:
    r = start("--host", host, "--port", str(busy_port), "--allow-anonymous")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"python -m inference_service: error: cannot listen on {host}:{busy_port}: Address "
                                "already in use; another process listens there: stop it or pick another --port")
    assert "Traceback" not in r.stdout and "READY" not in r.stdout
