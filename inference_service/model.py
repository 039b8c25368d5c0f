"""An ultralytics-exported ONNX model: the onnxruntime session plus what its metadata says about it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference_service import letterbox
from inference_service.decode import OpenedImage
from inference_service.device import CUDA_PROVIDER, PROVIDERS, DeviceError
from inference_service.lanes import InferenceGate
from inference_service.letterbox import PAD_VALUE, Letterbox
from inference_service.metadata import DEFAULT_TASK, SUPPORTED_TASKS, literal
from inference_service.postprocess import Detections, postprocess_e2e, postprocess_raw, to_detections


def cpu_count() -> int:
    """CPUs this process may run on (the cgroup/affinity view Cloud Run gives, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def session_options(intra_op_threads: int, device: str = "cpu") -> ort.SessionOptions:
    """Session options chosen for one CPU-bound model per container.

    - ``ORT_ENABLE_ALL``: layout and fusion rewrites are worth the ~100 ms they add to load time.
    - ``intra_op_num_threads`` = the CPUs we serve with: a YOLO graph is a chain of large convolutions,
      so the speed-up comes from splitting each operator across cores...
    - ...and ``inter_op_num_threads=1`` with sequential execution: there are no wide parallel branches
      to overlap, and a second pool would only compete with the first for the same cores.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    # Warnings about unused initialisers are noise in production logs; on CUDA keep them: they say which nodes fell
    # back to the CPU and why the CUDA provider failed to load.
    opts.log_severity_level = 2 if device == "cuda" else 3
    return opts


def open_session(path: Path, intra_op_threads: int, device: str) -> ort.InferenceSession:
    """A session on ``device`` ("cpu" or "cuda", device.py decided). On CUDA the CUDA and cuDNN libraries of the
    nvidia-* wheels are loaded first (they are not on the loader's path), and a session that came up without the
    CUDA provider (onnxruntime falls back to the CPU with only a warning) is an error, never a slow CPU service."""
    if device == "cuda":
        ort.preload_dlls()
    session = ort.InferenceSession(str(path), session_options(intra_op_threads, device),
                                   providers=list(PROVIDERS[device]))
    if device == "cuda" and session.get_providers()[0] != CUDA_PROVIDER:
        raise DeviceError(f"{CUDA_PROVIDER} did not load for {path.name} (providers: "
                          f"{', '.join(session.get_providers())}): the CUDA 12 / cuDNN 9 libraries or the driver are "
                          "missing or too old; onnxruntime's warning above says which")
    return session


def run_bound(session: ort.InferenceSession, input_name: str, output_names: list[str],
              tensor: np.ndarray) -> list[np.ndarray]:
    """One run through IO binding: the input bound from host memory, every output bound to host memory."""
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, tensor)
    for name in output_names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    return [value.numpy() for value in binding.get_outputs()]


@dataclass(frozen=True)
class ModelInfo:
    """What the server needs from the ONNX metadata and graph signature."""

    name: str
    task: str
    names: dict[int, str]
    stride: int
    imgsz: tuple[int, int]  # default (h, w)
    end2end: bool
    dynamic: bool  # height and width are free: letterbox to the minimal stride rectangle, like ultralytics
    kpt_shape: tuple[int, int] | None
    max_det: int | None = None  # an end-to-end export's top-k: an input needs at least this many anchors


class Model:
    """One loaded model; thread-safe (onnxruntime sessions may be ``run`` concurrently)."""

    def __init__(self, path: str | Path, name: str | None = None, intra_op_threads: int | None = None,
                 device: str = "cpu") -> None:
        path = self.path = Path(path)
        self.threads = intra_op_threads or cpu_count()
        self.device = device
        self.session = open_session(path, self.threads, device)
        self.lane_session: ort.InferenceSession | None = None  # see open_lane
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        out_shape = self.session.get_outputs()[0].shape
        names = literal(meta.get("names"), {})
        if not isinstance(names, dict):  # a list, or missing: number the classes
            names = dict(enumerate(names if isinstance(names, list) else []))
        imgsz = literal(meta.get("imgsz"), None) or [d if isinstance(d, int) else 640 for d in inp.shape[2:4]]
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        end2end = str(meta.get("end2end", "")).lower() == "true" or (len(out_shape) == 3 and out_shape[-1] == 6)
        kpt_shape = literal(meta.get("kpt_shape"), None)
        self.info = ModelInfo(
            name=name or path.stem,
            task=str(meta.get("task", DEFAULT_TASK)),
            names={int(k): str(v) for k, v in names.items()},
            stride=int(literal(meta.get("stride"), 32)),
            imgsz=(int(imgsz[0]), int(imgsz[1])),
            end2end=end2end,
            dynamic=not all(isinstance(d, int) for d in inp.shape[2:4]),
            kpt_shape=tuple(kpt_shape) if kpt_shape else None,
            max_det=out_shape[1] if end2end and isinstance(out_shape[1], int) else None,
        )
        self.last_inference_ms = self._warm_up(self.session)
        self.last_imgsz = self.info.imgsz  # the size the last inference was asked at

    def expected_inference_ms(self, imgsz: tuple[int, int]) -> float:
        """An inference at ``imgsz``: the last one scaled by area (a YOLO graph's work grows with its input's)."""
        (h, w), (last_h, last_w) = imgsz, self.last_imgsz
        return self.last_inference_ms * (h * w) / (last_h * last_w)

    def _warm_up(self, session: ort.InferenceSession) -> float:
        """First ``run`` allocates arenas and picks kernels: pay that before the first user does."""
        h, w = self.info.imgsz
        feed = {self.input_name: np.full((1, 3, h, w), PAD_VALUE / 255, dtype=np.float32)}
        self._run(session, feed[self.input_name])  # on CUDA this also runs cuDNN's convolution algorithm search
        start = time.perf_counter()
        self._run(session, feed[self.input_name])
        return (time.perf_counter() - start) * 1000

    def open_lane(self) -> None:
        """Load the one-thread session that overlapping requests run on (lanes.py), warm, then publish it; until
        then they share the full session. Costs that session's memory (~60 MB for yolo26n). Called after the
        model is ready, so it never delays the first predict. Not on CUDA: the GPU runs the graph whatever the CPU
        threads, and concurrent runs of the one session overlap their copies with each other's kernels."""
        if self.threads > 1 and self.lane_session is None and self.device == "cpu":
            lane = open_session(self.path, 1, "cpu")
            self._warm_up(lane)
            self.lane_session = lane

    def describe_threads(self, gate: InferenceGate) -> str:
        """For the start-up log: how onnxruntime's threads are used."""
        if gate.adaptive:
            return f"adaptive ({self.threads} threads alone, up to {gate.tokens} x 1 thread under load)"
        return f"{gate.tokens} x {self.threads} thread(s)"

    def unsupported(self) -> str | None:
        """Why this model cannot be served, or None."""
        if self.info.task not in SUPPORTED_TASKS:
            return (f"model '{self.info.name}' is a '{self.info.task}' model; this server supports "
                    f"{', '.join(SUPPORTED_TASKS)} models only")
        return None

    def preprocess(self, upload: OpenedImage, imgsz: tuple[int, int],
                   spare_cpu: int | None = None) -> tuple[np.ndarray, Letterbox]:
        """Decode and letterbox like ultralytics: minimal stride rectangle for dynamic inputs, the full size
        otherwise; ``spare_cpu``: a CPU the letterbox may run on while the decode goes on (``preprocess_upload``)."""
        return letterbox.preprocess_upload(upload, imgsz, self.info.stride, auto=self.info.dynamic,
                                           min_cells=self.info.max_det or 0, spare_cpu=spare_cpu)

    def infer(self, tensor: np.ndarray, lane: bool = False) -> list[np.ndarray]:
        """The onnxruntime call, nothing else; ``lane``: on the one-thread session, if there is one."""
        session = self.lane_session if lane and self.lane_session is not None else self.session
        return self._run(session, tensor)

    def _run(self, session: ort.InferenceSession, tensor: np.ndarray) -> list[np.ndarray]:
        """On the CPU a plain ``run``. On CUDA through IO binding: a predict moves the letterboxed input to the GPU
        once and each output back once, nothing else (NMS, box mapping and the response stay on the CPU, so the
        outputs are bound to host memory). Binding from the host array skips ``run``'s per-call feed/fetch
        conversion; whether that is measurable on an L4 is what benchmarks/bench_gpu.py's ``ort-cuda`` vs
        ``ort-cuda-iobinding`` rows tell (not run yet: no GPU machine was available)."""
        if self.device != "cuda":
            outputs: list[np.ndarray] = session.run(self.output_names, {self.input_name: tensor})
            return outputs
        return run_bound(session, self.input_name, self.output_names, tensor)

    def postprocess(self, outputs: list[np.ndarray], lb: Letterbox, conf: float, iou: float) -> Detections:
        """Rows above ``conf`` (NMS at ``iou`` for raw exports) mapped back to original pixels."""
        if self.info.end2end:
            rows = postprocess_e2e(outputs[0], conf)
        else:
            rows = postprocess_raw(outputs[0], conf, iou, nc=len(self.info.names))
        return to_detections(rows, lb, self.info.kpt_shape if self.info.task == "pose" else None)
