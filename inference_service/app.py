"""The HTTP layer: FastAPI routes over the inference core, in the Ultralytics predict wire format.

Errors are always JSON ``{"error": "<what is wrong>", "field": "<form field or null>"}``: 401 for a
missing or wrong key, 413 for a body over the cap, 422 for a field (or image) the server cannot use,
503 while the model loads. Client mistakes never become 5xx.

Capacity (admission.py): beyond ``max_concurrency`` predicts running, a predict waits for a turn while its
expected wait is within ``max_wait_seconds`` (and fewer than ``max_queue`` wait), and is otherwise refused at once
with 503 and Retry-After. Every predict answers within ``request_timeout``: 408 if its body
has not arrived by then (the client's slowness), 504 if its result is not ready (the server's).
"""


import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from inference_service import __version__, core, native
from inference_service.admission import Admission, AtCapacity
from inference_service.auth import AuthError, KeyStore
from inference_service.device import PROVIDERS, concrete
from inference_service.lanes import InferenceGate
from inference_service.model import Model, ModelInfo, cpu_count
from inference_service.params import DEPLOYMENT_PATH, FIELDS, OPENAPI_FORM, PredictParams, parse_params
from inference_service.settings import ServerSettings as Settings  # app.Settings: what create_app takes
from inference_service.telemetry import Metrics, RequestMiddleware, TooLarge, too_large_message

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STARTED = time.time()

log = logging.getLogger("inference_service")


class CpuWork:
    """The CPU-bound part of one predict, run whole in one worker thread: decode, letterbox, inference (at most
    the gate's turn, so other requests decode meanwhile), postprocess. One hop off the event loop instead of one
    per stage: on a small instance each thread wake-up costs a noticeable fraction of a ms."""

    def __init__(self, gate: InferenceGate, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.gate = gate
        self._lock = threading.Lock()
        self._busy = 0

    def run(self, model: Model, data: bytes, params: PredictParams,
            deadline: float) -> tuple[tuple[int, int], list[dict], dict[str, float]]:
        """(image height and width, summarized results, stage timings in ms). Skips inference if ``deadline`` (a
        ``time.monotonic`` value: the event loop's clock) passed while it waited: its client has had a 504."""
        with self._lock:
            self._busy += 1
            alone = self._busy == 1
        try:
            t0 = time.perf_counter()
            image = core.decode_image(data, self.max_pixels)
            tensor, lb = model.preprocess(image, params.imgsz or model.info.imgsz, alone=alone)
            t1 = time.perf_counter()
            with self.gate.turn(alone=self._busy == 1) as lane:
                if time.monotonic() > deadline:
                    raise TimeoutError
                t2 = time.perf_counter()
                outputs = model.infer(tensor, lane=lane)
                t3 = time.perf_counter()
            det = model.postprocess(outputs, lb, params.conf, params.iou)
            results = core.summarize(det, model.info.names, lb.orig_shape, params.normalize, params.decimals)
            t4 = time.perf_counter()
        finally:
            with self._lock:
                self._busy -= 1
        timings = {"preprocess": (t1 - t0) * 1000, "inference": (t3 - t2) * 1000, "postprocess": (t4 - t3) * 1000}
        return (int(image.shape[0]), int(image.shape[1])), results, timings


class NotReady(Exception):
    """The model is still loading (or failed to): 503 with a reason."""


class ModelProvider(Protocol):
    """Where the predict handler gets its model. Dedicated mode holds one; a shared mode can resolve by path."""

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
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            start = time.perf_counter()
            s = self.settings
            gate = s.gate()
            self.model = Model(s.model_path, s.model_name, s.threads_per_inference, s.device)
            self.metrics.model_ready.set(1)
            log.info("model %s loaded in %.0f ms: task=%s imgsz=%s end2end=%s inference=%s letterbox=%s",
                     self.model.info.name, (time.perf_counter() - start) * 1000, self.model.info.task,
                     self.model.info.imgsz, self.model.info.end2end, self.model.describe_threads(gate),
                     "native" if core.NATIVE else "numpy")
            if core.NATIVE is None:
                log.warning("letterbox kernel %s is not built (python inference_service/native.py builds it): "
                            "resizing with the numpy port, same results, ~8 ms more per camera image",
                            native.LIBRARY.name)
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
    """What the Test page shows of a model; ``end2end`` disables its iou control (NMS-free models ignore iou)."""
    return {"model": info.name, "task": info.task, "imgsz": info.imgsz[0], "stride": info.stride,
            "end2end": info.end2end}


def error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _field_of(exc: RequestValidationError) -> str | None:
    errors = exc.errors()
    loc = errors[0].get("loc", ()) if errors else ()
    return str(loc[-1]) if loc else None


def create_app(settings: Settings, provider: ModelProvider | None = None) -> FastAPI:
    """The app for one dedicated endpoint; pass ``provider`` to serve models resolved some other way."""
    # `python -m inference_service` resolves the device before the port opens; an app made in-process may not have
    settings = settings.model_copy(update={"device": concrete(settings.device)})
    metrics = Metrics()
    metrics.provider.labels(PROVIDERS[settings.device][0]).set(1)
    provider = provider or SingleModel(settings, metrics)
    keys = KeyStore(None if settings.allow_anonymous else settings.api_key_file, settings.secrets_recheck_seconds)
    if keys.anonymous and not settings.allow_anonymous:
        raise ValueError("an API key file is required unless allow_anonymous is set")
    samples_dir = settings.samples_dir or settings.model_path.parent / "samples"
    # Each predict's CPU work runs in one hop to these threads (a hop is a thread wake-up each way): as many as
    # CPUs, so one request decodes while another infers, and at least one more than the concurrent inferences.
    # Long-lived threads, so freed buffers are reused from the same few malloc arenas and RSS settles instead of
    # creeping up per new thread.
    gate = settings.gate()
    workers = ThreadPoolExecutor(
        max_workers=min(settings.max_concurrency, max(cpu_count(), gate.tokens + 1)), thread_name_prefix="predict")
    cpu_work = CpuWork(gate, settings.max_pixels)
    admission = Admission(settings.max_concurrency, settings.max_queue, settings.max_wait_seconds, metrics.registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        provider.start()
        yield
        workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="YOLO inference server", version=__version__, lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body=settings.max_body_bytes)
    app.state.settings, app.state.provider, app.state.metrics = settings, provider, metrics

    @app.exception_handler(core.InputError)
    async def _input_error(_: Request, exc: core.InputError) -> JSONResponse:
        return error(exc.status, exc.message, exc.field)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return error(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(TooLarge)
    async def _too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return error(413, too_large_message(settings.max_body_bytes), "file")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        field = _field_of(exc)
        return error(422, f"invalid {field}: {exc.errors()[0].get('msg', 'invalid value')}", field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error(500, "internal server error")

    # Predict's dependencies are async: they take microseconds, and a sync one costs a thread-pool hop, so 32
    # concurrent predicts would start 32 threads, each spreading decode buffers over another malloc arena.
    async def require_key(request: Request) -> None:
        keys.check(request.headers.get("authorization"))

    async def resolve_model() -> Model:
        model = provider.get()
        if reason := model.unsupported():
            raise core.InputError(reason, None, 422)
        return model

    def health() -> JSONResponse:
        state, err = provider.status()
        latency = provider.latency_ms() if state == "ready" else 0.0
        body = {"healthy": state == "ready", "status": state, "latencyMs": round(latency, 2), "error": err,
                "provider": PROVIDERS[settings.device][0]}
        return JSONResponse(body, status_code=200 if state == "ready" else 503)

    app.get("/health", summary="Readiness (the Cloud Run startup probe)")(health)
    app.get("/api/deployments/{owner}/{deployment}/health", summary="Readiness, deployment path",
            openapi_extra=DEPLOYMENT_PATH)(health)

    @app.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def predict(
        request: Request, _: Annotated[None, Depends(require_key)], model: Annotated[Model, Depends(resolve_model)]
    ) -> JSONResponse:
        """Ultralytics-compatible predict: multipart ``file`` plus optional conf, iou, imgsz, normalize, decimals."""
        return await predict_request(request, model)

    async def predict_request(request: Request, model: Model) -> JSONResponse:
        """Read the multipart form and run ``model`` on it: the body of every predict route, shared mode's too."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + settings.request_timeout
        try:
            admission.refuse_if_full()  # before parsing the body too: shedding must stay cheap when it matters most
            async with asyncio.timeout_at(deadline):
                form = await request.form(max_files=2, max_fields=len(FIELDS))
        except AtCapacity as e:
            raise at_capacity(e) from None
        except TimeoutError:  # the rest of the body may still trickle in: close rather than read it
            raise HTTPException(408, f"the request body did not arrive within the {settings.request_timeout:g} s "
                                "request timeout", headers={"Connection": "close"}) from None
        fields: dict[str, str] = {}
        upload = None
        for key, value in form.multi_items():
            if key in fields or (key == "file" and upload is not None):
                raise core.InputError(f"{key!r} is given more than once; send each field once", key)
            if isinstance(value, UploadFile):
                if key != "file":
                    raise core.InputError(f"unexpected file part {key!r}; send the image as 'file'", key)
                upload = value
            else:
                fields[key] = value
        if "source" in fields:
            raise core.InputError("URL sources are not supported by this server; upload the image bytes as the "
                                  "'file' part", "source")
        if "file" in fields:
            raise core.InputError("'file' must be a file part (multipart/form-data upload), not a text field", "file")
        params = parse_params(fields, model.info, settings.max_imgsz)
        if upload is None:
            raise core.InputError("missing image: send it as the multipart 'file' part", "file")
        data = await upload.read()
        try:
            async with asyncio.timeout_at(deadline), admission.slot():
                return await run_predict(model, data, params, started, deadline)
        except AtCapacity as e:
            raise at_capacity(e) from None
        except TimeoutError:  # an inference already running finishes in its thread; one not yet started is dropped
            raise HTTPException(504, f"no result within the {settings.request_timeout:g} s request timeout: the "
                                "server is busier than it can answer in time; retry later") from None

    def at_capacity(refusal: AtCapacity) -> HTTPException:
        return HTTPException(503, str(refusal), headers={"Retry-After": str(refusal.retry_after_s)})

    async def run_predict(model: Model, data: bytes, params: PredictParams, started: float,
                          deadline: float) -> JSONResponse:
        loop = asyncio.get_running_loop()
        shape, results, timings = await loop.run_in_executor(workers, cpu_work.run, model, data, params, deadline)
        model.last_inference_ms = timings["inference"]
        for stage, ms in timings.items():
            metrics.stage.labels(stage).observe(ms / 1000)
        info = model.info
        return JSONResponse({
            "images": [{
                "shape": list(shape),
                "speed": {stage: round(ms, 2) for stage, ms in timings.items()},
                "results": results,
            }],
            "metadata": {
                "imageCount": 1,
                "classNames": {str(k): v for k, v in info.names.items()},
                "model": info.name,
                "task": info.task,
                "functionTimeCall": _ms(time.perf_counter() - started),
                "functionTimeAlive": _ms(time.time() - STARTED),
                "version": {"server": __version__},
            },
        })

    app.state.predict_request = predict_request
    app.post("/predict", summary="Run the model on one image", openapi_extra=OPENAPI_FORM)(predict)
    app.post("/api/deployments/{owner}/{deployment}/predict", summary="Run the model, deployment path",
             openapi_extra=OPENAPI_FORM | DEPLOYMENT_PATH)(predict)

    @app.get("/", include_in_schema=False)
    def test_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/info", summary="What the Test page needs: the mode, the model (dedicated), samples")
    def page_info() -> dict[str, Any]:
        return {"authRequired": not keys.anonymous, "samples": _samples(samples_dir), "version": __version__,
                **provider.page_info()}

    @app.get("/samples/{name}", include_in_schema=False)
    def sample(name: str) -> FileResponse:
        if name not in _samples(samples_dir):
            raise HTTPException(404, f"no sample named {name!r}")
        return FileResponse(samples_dir / name)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _samples(samples_dir: Path) -> list[str]:
    if not samples_dir.is_dir():
        return []
    return sorted(p.name for p in samples_dir.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES and p.is_file())
