"""benchmarks/bench_gpu.py without a GPU: it says why and exits 0 without touching RESULTS.md; its measurement and
report code, on stand-in calls."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort

from benchmarks import bench_gpu
from inference_service import device
from inference_service.device import CPU_PROVIDER, CUDA_PROVIDER, Gpus

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def test_without_a_gpu_it_says_so_and_exits_0_measuring_nothing() -> None:
    before = RESULTS.read_bytes()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bench_gpu: no usable GPU on this machine (this onnxruntime has no "
                               "CUDAExecutionProvider"), r.stdout
    assert "nothing measured" in r.stdout
    assert RESULTS.read_bytes() == before


def test_a_gpu_build_without_a_gpu_is_no_gpu_either(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(device, "visible_gpus", lambda: Gpus(0, "no NVIDIA driver: libcuda.so.1 not found"))
    assert bench_gpu.gpu_missing() == "no GPU is visible (no NVIDIA driver: libcuda.so.1 not found)"
    monkeypatch.setattr(device, "visible_gpus", lambda: Gpus(1))
    assert bench_gpu.gpu_missing() is None


def test_measure_gives_p50_per_request_and_throughput_at_a_concurrency() -> None:
    figures = bench_gpu.measure(lambda: time.sleep(0.02), concurrency=4, n=16)
    assert 19 <= figures["p50_ms"] < 60
    assert 60 < figures["rps"] <= 4 / 0.02, "4 clients of 20 ms calls: at most 200/s"
    alone = bench_gpu.measure(lambda: time.sleep(0.02), concurrency=1, n=4)
    assert alone["rps"] <= 50 and figures["rps"] > 1.5 * alone["rps"]


def test_the_report_has_every_contender_and_the_decode_share() -> None:
    figures = {c: {"p50_ms": 2.0 * c, "rps": 100.0 * c} for c in bench_gpu.CONCURRENCY}
    text = bench_gpu.report({"yolo26n": {"ort-cuda": figures, "ultralytics-torch": "torch has no CUDA"}},
                            {"yolo26n": {"preprocess": 6.0, "inference": 3.0, "postprocess": 1.0}}, "NVIDIA L4", 200)
    assert "| yolo26n | ort-cuda | 2.0 | 100.0 | 8.0 | 400.0 | 32.0 | 1600.0 |" in text
    assert "| yolo26n | ultralytics-torch | not run: torch has no CUDA |" in text
    assert "| yolo26n | 6.0 | 3.0 | 1.0 | 60% |" in text
