"""The GPU image's runtime (inference_service/requirements-gpu.txt) resolves from the package index to wheels for the
image's platform (CPython 3.11, glibc 2.36 x86_64: python:3.11-slim-bookworm), with the CUDA 12 libraries Cloud
Run's L4 driver (535, CUDA 12.2) can run, and is otherwise the CPU image's runtime. No GPU is needed to check that;
building the GPU image (2 GB of wheels) is not done here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_REQUIREMENTS = ROOT / "inference_service" / "requirements.txt"
GPU_REQUIREMENTS = ROOT / "inference_service" / "requirements-gpu.txt"
GLIBC_MINOR = 36  # Debian 12 bookworm, the image's base
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of a requirements file's `name==version` lines."""
    out = {}
    for line in path.read_text().splitlines():
        if spec := line.split("#")[0].strip():
            name, version = spec.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_the_gpu_runtime_is_the_cpu_runtime_with_onnxruntime_gpu_and_cuda_12() -> None:
    cpu, gpu = pins(CPU_REQUIREMENTS), pins(GPU_REQUIREMENTS)
    assert {k: v for k, v in cpu.items() if k != "onnxruntime"} == {
        k: v for k, v in gpu.items() if k != "onnxruntime-gpu" and not k.startswith("nvidia-")}, \
        "the same server runtime in both images"
    assert "onnxruntime" not in gpu, "onnxruntime and onnxruntime-gpu install the same module: only one"
    nvidia = [k for k in gpu if k.startswith("nvidia-")]
    assert nvidia and all(k.endswith("-cu12") for k in nvidia), "CUDA 12 wheels: the L4 driver runs CUDA <= 12.x"
    assert {"nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= set(nvidia)


@pytest.mark.image  # the GPU image's pip layer: resolving it costs ~13 s of pip, so it runs where the image builds
@pytest.mark.slow
def test_the_gpu_runtime_resolves_to_binary_wheels_for_the_image(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report",
           str(report), "--only-binary=:all:", "--target", str(tmp_path / "target"), "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
           *(arg for platform in PLATFORMS for arg in ("--platform", platform)), "-r", str(GPU_REQUIREMENTS)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    installs = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i
                for i in json.loads(report.read_text())["install"]}
    wanted = pins(GPU_REQUIREMENTS)
    assert {name: installs[name]["metadata"]["version"] for name in wanted} == wanted, "the pins resolve as written"
    unpinned_cuda = sorted(n for n in installs if n.startswith("nvidia-") and n not in wanted)
    assert unpinned_cuda == [], "every CUDA library the resolver pulls in is pinned"
    assert all(i["download_info"]["url"].endswith(".whl") for i in installs.values()), "wheels only, no builds"
    requires = installs["onnxruntime-gpu"]["metadata"]["requires_dist"]
    cuda_extra = [r.split(";")[0].split("~=")[0].strip() for r in requires if "extra ==" in r and "nvidia" in r]
    assert cuda_extra and set(cuda_extra) <= set(wanted), \
        f"this onnxruntime-gpu build wants {cuda_extra}: the CUDA libraries its [cuda,cudnn] extras name are pinned"
