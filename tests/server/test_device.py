"""`--device auto|cpu|cuda`: provider selection from mocked providers and GPUs, the driver probe, the refusal to
serve a `cuda` request from the CPU (the real process on this GPU-less machine), and the provider shown in the
start-up log, /health and /metrics."""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from inference_service import device as device_module
from inference_service.device import CPU_PROVIDER, CUDA_PROVIDER, DeviceError, Gpus, choose, visible_gpus
from inference_service.model import Model, run_bound
from tests.helpers_server import PYTHON, ROOT, demo_model, run_server

GPU_BUILD = ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER]
CPU_BUILD = ["AzureExecutionProvider", CPU_PROVIDER]


@pytest.mark.parametrize(("requested", "available", "gpus", "device"), [
    ("auto", GPU_BUILD, Gpus(1), "cuda"),
    ("auto", GPU_BUILD, Gpus(0, "no NVIDIA driver: libcuda.so.1 not found"), "cpu"),
    ("auto", CPU_BUILD, Gpus(1), "cpu"),  # a GPU the CPU build cannot use
    ("cpu", GPU_BUILD, Gpus(1), "cpu"),  # asked for: the GPU stays idle on purpose
    ("cuda", GPU_BUILD, Gpus(2), "cuda"),
])
def test_the_device_follows_the_request_the_providers_and_the_gpus(requested, available, gpus, device) -> None:
    choice = choose(requested, available, gpus)
    assert choice.device == device
    assert choice.providers == ((CUDA_PROVIDER, CPU_PROVIDER) if device == "cuda" else (CPU_PROVIDER,))


def test_auto_says_why_it_stays_on_the_cpu() -> None:
    assert "no GPU is visible (no NVIDIA driver" in choose("auto", GPU_BUILD, Gpus(0, "no NVIDIA driver")).reason
    assert f"no {CUDA_PROVIDER}" in choose("auto", CPU_BUILD, Gpus(1)).reason


@pytest.mark.parametrize(("available", "gpus", "why"), [
    (CPU_BUILD, Gpus(1), "this onnxruntime has no CUDAExecutionProvider"),
    (GPU_BUILD, Gpus(0, "the NVIDIA driver found no usable GPU (cuInit error 100)"),
     "no GPU is visible (the NVIDIA driver found no usable GPU (cuInit error 100))"),
])
def test_cuda_without_the_provider_or_a_gpu_is_an_error_not_the_cpu(available, gpus, why) -> None:
    with pytest.raises(DeviceError, match="refusing to serve on the CPU") as raised:
        choose("cuda", available, gpus)
    assert why in str(raised.value)


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(DeviceError, match="device must be one of auto, cpu, cuda"):
        choose("gpu", GPU_BUILD, Gpus(1))


class FakeDriver:
    """libcuda's two calls the probe makes, with chosen results."""

    def __init__(self, init: int, count: int) -> None:
        self.init, self.count = init, count

    def cuInit(self, flags: int) -> int:
        return self.init

    def cuDeviceGetCount(self, out: object) -> int:
        ctypes.cast(out, ctypes.POINTER(ctypes.c_int)).contents.value = self.count
        return 0


@pytest.mark.parametrize(("driver", "gpus"), [
    (FakeDriver(0, 1), Gpus(1)),
    (FakeDriver(100, 0), Gpus(0, "the NVIDIA driver found no usable GPU (cuInit error 100)")),
    (FakeDriver(0, 0), Gpus(0, "the NVIDIA driver reports 0 devices")),
    (None, Gpus(0, "no NVIDIA driver: libcuda.so.1 not found")),
])
def test_the_gpu_probe_asks_the_driver(monkeypatch, driver, gpus) -> None:
    def load(name: str) -> FakeDriver:
        assert name == "libcuda.so.1"
        if driver is None:
            raise OSError("libcuda.so.1: cannot open shared object file")
        return driver

    monkeypatch.setattr(device_module.ctypes, "CDLL", load)
    assert visible_gpus() == gpus


def test_resolve_on_this_machine_with_a_gpu_build_but_no_gpu_refuses_cuda(monkeypatch) -> None:
    """The real driver probe here (no NVIDIA driver), as if onnxruntime-gpu were installed."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    assert device_module.resolve("auto").device == "cpu"
    with pytest.raises(DeviceError, match=r"no GPU is visible \(no NVIDIA driver: libcuda.so.1 not found\)"):
        device_module.resolve("cuda")


def test_device_cuda_on_this_cpu_machine_is_one_line_and_exit_2() -> None:
    r = subprocess.run([PYTHON, "-m", "inference_service", "--model", str(demo_model()), "--allow-anonymous",
                        "--port", "0", "--device", "cuda", "--ready-message", "READY {url}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line
    assert r.stderr.startswith("python -m inference_service: error: --device cuda (DEVICE=cuda): this onnxruntime "
                               "has no CUDAExecutionProvider")
    assert "refusing to serve on the CPU" in r.stderr
    assert "READY" not in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_a_session_that_comes_up_without_cuda_is_an_error() -> None:
    """onnxruntime itself falls back to the CPU with only a warning when the CUDA provider cannot load; the model
    refuses that instead of serving on the CPU."""
    with pytest.raises(DeviceError, match=r"CUDAExecutionProvider did not load for demo-e2e\.onnx"):
        Model(demo_model(), device="cuda")


def test_io_binding_gives_the_outputs_of_a_plain_run() -> None:
    """The CUDA path's IO binding, exercised on the CPU provider (the only one here)."""
    model = Model(demo_model("raw"))
    h, w = model.info.imgsz
    tensor = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    bound = run_bound(model.session, model.input_name, model.output_names, tensor)
    plain = model.session.run(model.output_names, {model.input_name: tensor})
    assert [o.shape for o in bound] == [o.shape for o in plain]
    assert all(np.array_equal(a, b) for a, b in zip(bound, plain, strict=True))


def test_the_provider_is_in_the_start_up_log_health_and_metrics(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with run_server(["--model", str(demo_model()), "--allow-anonymous"], env={"DEVICE": "auto"},
                    log_path=log) as (base, _):
        health = httpx.get(f"{base}/health").json()
        metrics = httpx.get(f"{base}/metrics").text
    assert health["provider"] == CPU_PROVIDER
    assert f'inference_provider{{provider="{CPU_PROVIDER}"}} 1.0' in metrics
    lines = [json.loads(line)["message"] for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(m.startswith(f"device: {CPU_PROVIDER} (auto: this onnxruntime has no {CUDA_PROVIDER}") for m in lines)
