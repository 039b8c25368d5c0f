"""Start-up of the real ``python -m inference_service`` process and of ``make serve``: a mistake is one line
naming the problem, exit 2, no traceback and no announced address; a good start announces the address it serves."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference_service.serve import bind
from tests.helpers_server import PYTHON, ROOT, demo_model, wait_healthy

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


def test_an_empty_argument_is_one_line_too() -> None:
    r = start("")  # "$EXTRA_ARGS" with nothing in it
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("python -m inference_service: error: unrecognized arguments: ")


def test_a_misspelt_flag_is_one_line_with_a_suggestion() -> None:
    r = start("--modle", "x.onnx")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("python -m inference_service: error: unrecognized arguments: --modle x.onnx; did you mean "
                        "--mode or --model? (`python -m inference_service --help` lists the flags)\n")


def make_serve(port: int | str, key_dir: Path, *variables: str) -> subprocess.Popen[str]:
    """``make serve`` as written in the Makefile, on the test venv's Python (its own venv is taken as made:
    ``-o``), with its key file in ``key_dir`` (not the user's .serve/), in a process group of its own so the
    test can stop it."""
    return subprocess.Popen(["make", "--no-print-directory", "-o", ".venv-serve/.serve-deps", "serve",
                             f"SERVE_PYTHON={PYTHON}", f"SERVE_PORT={port}", f"SERVE_DIR={key_dir}", *variables],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_make_serve_on_a_busy_port_prints_no_url_exits_2_and_keeps_the_running_servers_key(busy_port: int,
                                                                                           tmp_path: Path) -> None:
    keys = tmp_path / str(busy_port) / "sha256.txt"
    keys.parent.mkdir()
    keys.write_text("digest of the key the server on that port was started with\n")
    proc = make_serve(busy_port, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert "http://" not in out + err
    assert (f"make serve: cannot listen on port {busy_port} (Address already in use): stop what runs there, or pick "
            f"another port: make serve SERVE_PORT={busy_port % 65535 + 1}") in err
    assert "Traceback" not in err
    assert proc.returncode == 2
    assert keys.read_text() == "digest of the key the server on that port was started with\n"


@pytest.mark.parametrize("compiler", ["cc", "none"])
def test_make_serve_prints_the_address_it_serves_once_it_answers(tmp_path: Path, compiler: str) -> None:
    """Without a C compiler the kernel is skipped with a note and the server still starts (numpy letterbox)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    no_compiler = [f"NATIVE={tmp_path / '_letterbox.so'}", f"CC={tmp_path / 'no-cc'}"] if compiler == "none" else []
    proc = make_serve(port, tmp_path, *no_compiler)
    try:
        assert proc.stdout is not None
        lines, line = [], ""
        for line in proc.stdout:  # JSON log lines, then the ready message
            lines.append(line)
            if line.startswith("Test page: "):
                break
        url = line.removeprefix("Test page: ").strip()
        assert url == f"http://127.0.0.1:{port}/", lines
        key = next(proc.stdout).removeprefix("API key:").strip()
        assert hashlib.sha256(key.encode()).hexdigest() in (tmp_path / str(port) / "sha256.txt").read_text()
        assert f"-F file=@models/samples/shapes-1.jpg {url}predict" in next(proc.stdout)
        health = httpx.get(f"{url}health", timeout=5)  # listening: 200, or 503 while the model still loads
        assert health.status_code in (200, 503) and "status" in health.json()
        wait_healthy(url.rstrip("/"), proc)
        r = httpx.post(f"{url}predict", headers={"Authorization": f"Bearer {key}"},
                       files={"file": (ROOT / "models/samples/shapes-1.jpg").read_bytes()}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert ("NOTE: no C letterbox kernel; the server uses its numpy port" in err) == (compiler == "none"), err


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connections_send_each_response_at_once_without_waiting_for_an_ack(host: str) -> None:
    """Each accepted connection has TCP_NODELAY (asyncio sets it only on sockets that say they are TCP): without
    it a keep-alive client waited for the delayed ACK, 40 ms, before the body that follows a response's headers."""
    sock = bind(host, 0)

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(host, sock.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1


def test_ctrl_c_drains_and_exits_130_without_a_traceback() -> None:
    """How a user stops `make serve`: the drain is logged, then exit 130 as a shell reports Ctrl-C, no
    KeyboardInterrupt traceback through asyncio."""
    proc = subprocess.Popen([PYTHON, "-m", "inference_service", "--model", str(demo_model()), "--allow-anonymous",
                             "--port", "0", "--ready-message", READY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        assert proc.stdout is not None
        before = []
        for line in proc.stdout:  # JSON log lines, then the ready message
            before.append(line)
            if line.startswith("READY "):
                break
        ready = before[-1]
        wait_healthy(ready.split()[1].rstrip("/"), proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        out = "".join(before) + out
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert "shutdown: draining 0 in-flight request(s)" in out
    assert '"message": "listening on 0.0.0.0:' in out, "the log says where it listens, as bound: every address"


@pytest.mark.parametrize(("port", "line"), [
    ("80a", "make serve: SERVE_PORT=80a is not a port (0-65535; 0 picks a free one)"),
    ("70000", "make serve: SERVE_PORT=70000 is not a port (0-65535; 0 picks a free one)"),
    ("-1", "make serve: SERVE_PORT=-1 is not a port (0-65535; 0 picks a free one)"),
    ("\u00b2", "make serve: SERVE_PORT=\u00b2 is not a port (0-65535; 0 picks a free one)"),  # isdigit() says yes
])
def test_make_serve_with_a_port_that_is_not_one_is_one_line(tmp_path: Path, port: str, line: str) -> None:
    proc = make_serve(port, tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and line in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "no key is made"


@pytest.mark.parametrize("zero", ["0", "00"])
def test_make_serve_on_any_free_port_makes_a_key_file_per_run(tmp_path: Path, zero: str) -> None:
    """SERVE_PORT=0 twice is two servers on two ports: neither replaces the other's key (00 is 0 too)."""
    dirs = []
    for _ in range(2):
        proc = make_serve(zero, tmp_path)
        try:
            assert proc.stdout is not None
            started = next(line for line in proc.stdout if line.startswith("Starting the inference server"))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=30)
        dirs.append(Path(started.rsplit("key digest in ", 1)[1].rstrip(")\n")).parent)
    assert dirs[0] != dirs[1] and all(d.parent == tmp_path and d.name.startswith("0-") for d in dirs)
    assert all((d / "sha256.txt").is_file() for d in dirs)
