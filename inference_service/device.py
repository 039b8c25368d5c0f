"""Which onnxruntime execution provider serves: `--device auto|cpu|cuda` (env DEVICE).

`choose` is pure (requested device, the providers this onnxruntime build has, the GPUs the NVIDIA driver sees),
so every combination is testable without a GPU; `resolve` feeds it the real facts. `cuda` never degrades to the
CPU: someone paying for an L4 wants a start-up error (exit 2, the revision never serves) rather than a service
that answers from the CPU at a fraction of the speed. `auto` takes CUDA only when both the provider and a GPU
are there, and says why not otherwise.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

DEVICES = ("auto", "cpu", "cuda")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
PROVIDERS = {"cpu": (CPU_PROVIDER,), "cuda": (CUDA_PROVIDER, CPU_PROVIDER)}  # CPU: nodes CUDA has no kernel for
CUDA_SUCCESS = 0


class DeviceError(Exception):
    """The requested device cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Gpus:
    """What the NVIDIA driver reports: how many GPUs this process may use, and why none when there are none."""

    count: int
    why_none: str = ""


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda"
    reason: str  # for the start-up log

    @property
    def providers(self) -> tuple[str, ...]:
        """For InferenceSession(providers=...): the chosen provider first."""
        return PROVIDERS[self.device]

    @property
    def provider(self) -> str:
        return self.providers[0]


def choose(requested: str, available: Sequence[str], gpus: Gpus) -> DeviceChoice:
    """The device to serve on; DeviceError when `cuda` is asked for and cannot be had."""
    if requested not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)} (got {requested!r})")
    if requested == "cpu":
        return DeviceChoice("cpu", "asked for")
    missing = None
    if CUDA_PROVIDER not in available:
        missing = (f"this onnxruntime has no {CUDA_PROVIDER} (it has {', '.join(available) or 'none'}): it is the "
                   "CPU build; the GPU image installs onnxruntime-gpu (inference_service/requirements-gpu.txt)")
    elif gpus.count < 1:
        missing = f"no GPU is visible ({gpus.why_none or 'the NVIDIA driver reports 0 devices'})"
    if missing is None:
        return DeviceChoice("cuda", f"{CUDA_PROVIDER} available, {gpus.count} GPU(s) visible")
    if requested == "cuda":
        raise DeviceError(f"--device cuda (DEVICE=cuda): {missing}; refusing to serve on the CPU instead "
                          "(use --device auto or cpu to allow that)")
    return DeviceChoice("cpu", f"auto: {missing}")


def visible_gpus() -> Gpus:
    """Ask the NVIDIA driver (libcuda, which Cloud Run mounts into GPU instances) how many GPUs it exposes.

    The driver API rather than nvidia-smi or torch: nothing to install, and it honours CUDA_VISIBLE_DEVICES.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Gpus(0, "no NVIDIA driver: libcuda.so.1 not found")
    status = cuda.cuInit(0)
    if status != CUDA_SUCCESS:
        return Gpus(0, f"the NVIDIA driver found no usable GPU (cuInit error {status})")
    count = ctypes.c_int(0)
    status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != CUDA_SUCCESS:
        return Gpus(0, f"the NVIDIA driver could not count GPUs (cuDeviceGetCount error {status})")
    return Gpus(count.value, "" if count.value else "the NVIDIA driver reports 0 devices")


def resolve(requested: str) -> DeviceChoice:
    """`choose` on this machine's facts. The GPU is probed only when the provider is there to use it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpus = visible_gpus() if requested != "cpu" and CUDA_PROVIDER in available else Gpus(0)
    return choose(requested, available, gpus)


def concrete(requested: str) -> str:
    """`cpu` or `cuda`: `auto` resolved on this machine, the others as given (the app needs a concrete device)."""
    return resolve(requested).device if requested == "auto" else requested
