"""An ultralytics-exported ONNX model: the onnxruntime session plus what its metadata says about it."""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference_service import letterbox
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


@functools.cache
def letterbox_pool() -> ThreadPoolExecutor:
    """One pool for every model's letterbox bands beyond the first (which the calling thread does), so a lone
    image is resized on every CPU. Never the pool that runs predicts, so a band can't wait behind the request
    that is waiting for it."""
    return ThreadPoolExecutor(max_workers=max(cpu_count() - 1, 1), thread_name_prefix="letterbox")


def session_options(intra_op_threads: int) -> ort.SessionOptions:
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
    opts.log_severity_level = 3  # warnings about unused initialisers are noise in production logs
    return opts


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

    def __init__(self, path: str | Path, name: str | None = None, intra_op_threads: int | None = None) -> None:
        path = self.path = Path(path)
        self.threads = intra_op_threads or cpu_count()
        self.letterbox_bands = cpu_count()  # read once: the affinity query is a syscall
        self.session = ort.InferenceSession(
            str(path), session_options(self.threads), providers=["CPUExecutionProvider"]
        )
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

    def _warm_up(self, session: ort.InferenceSession) -> float:
        """First ``run`` allocates arenas and picks kernels: pay that before the first user does."""
        h, w = self.info.imgsz
        feed = {self.input_name: np.full((1, 3, h, w), PAD_VALUE / 255, dtype=np.float32)}
        session.run(self.output_names, feed)
        start = time.perf_counter()
        session.run(self.output_names, feed)
        return (time.perf_counter() - start) * 1000

    def open_lane(self) -> None:
        """Load the one-thread session that overlapping requests run on (lanes.py), warm, then publish it; until
        then they share the full session. Costs that session's memory (~60 MB for yolo26n). Called after the
        model is ready, so it never delays the first predict."""
        if self.threads > 1 and self.lane_session is None:
            lane = ort.InferenceSession(str(self.path), session_options(1), providers=["CPUExecutionProvider"])
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

    def preprocess(self, image: np.ndarray, imgsz: tuple[int, int],
                   alone: bool = True) -> tuple[np.ndarray, Letterbox]:
        """Letterbox like ultralytics: minimal stride rectangle for dynamic inputs, the full size otherwise.

        ``alone``: nothing else is using the CPUs, so the resize is split across all of them; under load each
        request resizes in its own thread, since splitting would only add hand-offs to CPUs that are busy anyway.
        """
        return letterbox.preprocess(image, imgsz, self.info.stride, auto=self.info.dynamic,
                                    min_cells=self.info.max_det or 0, executor=letterbox_pool(),
                                    bands=self.letterbox_bands if alone else 1)

    def infer(self, tensor: np.ndarray, lane: bool = False) -> list[np.ndarray]:
        """The onnxruntime call, nothing else; ``lane``: on the one-thread session, if there is one."""
        session = self.lane_session if lane and self.lane_session is not None else self.session
        return session.run(self.output_names, {self.input_name: tensor})

    def postprocess(self, outputs: list[np.ndarray], lb: Letterbox, conf: float, iou: float) -> Detections:
        """Rows above ``conf`` (NMS at ``iou`` for raw exports) mapped back to original pixels."""
        if self.info.end2end:
            rows = postprocess_e2e(outputs[0], conf)
        else:
            rows = postprocess_raw(outputs[0], conf, iou, nc=len(self.info.names))
        return to_detections(rows, lb, self.info.kpt_shape if self.info.task == "pose" else None)
