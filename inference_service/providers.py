"""Where the predict routes get their model: dedicated mode holds one, loaded in the background; shared mode
(shared.py) resolves a tenant's per request."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from inference_service import letterbox, native
from inference_service.errors import NotReady
from inference_service.model import Model, ModelInfo
from inference_service.params import min_imgsz
from inference_service.telemetry import Metrics

if TYPE_CHECKING:
    from inference_service.settings import ServerSettings as Settings

log = logging.getLogger("inference_service")


class ModelProvider(Protocol):
    """What health, the Test page and the dedicated predict routes ask of the model's owner."""

    def start(self) -> None: ...

    def status(self) -> tuple[str, str | None]: ...

    def get(self) -> Model: ...

    def latency_ms(self) -> float: ...

    def page_info(self) -> dict[str, Any]: ...


class SingleModel:
    """Dedicated mode: one model, loaded in a background thread so the port opens (and /health answers 503)
    while onnxruntime optimises the graph."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.model: Model | None = None
        self.error: str | None = None
        # Not a daemon: the interpreter waits for it at exit. A daemon thread torn down inside onnxruntime's session
        # constructor (a stop while the model or its lane session loads) aborts the process: "terminate called
        # without an active exception", exit 134.
        self._thread = threading.Thread(target=self._load, name="model-loader")

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            start = time.perf_counter()
            s = self.settings
            gate = s.gate()
            assert s.model_path is not None  # ServerSettings refuses dedicated mode without one
            self.model = Model(s.model_path, s.model_name, s.threads_per_inference, s.device)
            self.metrics.model_ready.set(1)
            log.info("model %s loaded in %.0f ms: task=%s imgsz=%s end2end=%s inference=%s letterbox=%s",
                     self.model.info.name, (time.perf_counter() - start) * 1000, self.model.info.task,
                     self.model.info.imgsz, self.model.info.end2end, self.model.describe_threads(gate),
                     letterbox.describe_kernel())
            if letterbox.NATIVE is None:
                log.warning("letterbox kernel %s is not built (python inference_service/native.py builds it): "
                            "resizing with the numpy port, same results, ~8 ms more per camera image",
                            native.LIBRARY.name)
            elif not native.has_jpeg(letterbox.NATIVE):
                log.warning("letterbox kernel %s was built without libjpeg (%s, then rebuild it): a lone request's "
                            "JPEG is decoded, then letterboxed, same results, 0.8-1.0 ms more per photo",
                            native.LIBRARY.name, native.JPEG_HINT)
        except Exception as e:  # any failure must surface in /health and the logs, not kill the loader silently
            self.error = f"{type(e).__name__}: {e}"
            log.exception("model %s failed to load", self.settings.model_path)
            return
        if gate.adaptive:
            self._open_lane(self.model)

    def _open_lane(self, model: Model) -> None:
        start = time.perf_counter()
        try:
            model.open_lane()
        except Exception:  # e.g. out of memory: serve on, overlapping requests share the full session
            log.exception("the one-thread lane session could not load; overlapping requests share the full one")
            return
        log.info("one-thread lane session for overlapping requests loaded in %.0f ms",
                 (time.perf_counter() - start) * 1000)

    def status(self) -> tuple[str, str | None]:
        if self.model is not None:
            return "ready", None
        return ("failed", self.error) if self.error else ("loading", None)

    def get(self) -> Model:
        if self.model is None:
            raise NotReady(f"model failed to load: {self.error}" if self.error else "model is loading, retry shortly")
        return self.model

    def latency_ms(self) -> float:
        return self.model.last_inference_ms if self.model else 0.0

    def page_info(self) -> dict[str, Any]:
        """The model's facts the Test page shows (``model_facts``), once loaded."""
        facts = model_facts(self.model.info) if self.model else {"model": self.settings.model_name}
        return {"mode": "dedicated", "predictPath": "/predict", **facts}


def model_facts(info: ModelInfo) -> dict[str, Any]:
    """What the Test page shows of a model; ``end2end`` disables its iou control (NMS-free models ignore iou), and
    ``minImgsz`` is the smallest imgsz a predict accepts (an end-to-end model's top-k needs that grid)."""
    return {"model": info.name, "task": info.task, "imgsz": info.imgsz[0], "stride": info.stride,
            "end2end": info.end2end, "minImgsz": min_imgsz(info)}
