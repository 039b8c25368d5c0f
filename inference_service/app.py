"""The server app: FastAPI over the predict pipeline, in the Ultralytics predict wire format.

``create_app`` builds a dedicated endpoint's; shared mode (shared.py) adds its routes to ``build_app``'s. The
parts, one module each: predict_service.py (admission, worker threads, the CPU work), providers.py (where the
model comes from), routes/ (the error format and the routes of predict, health and metrics, the Test page).
"""


from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from inference_service import __version__
from inference_service.auth import KeyStore
from inference_service.lanes import InferenceGate
from inference_service.model import cpu_count
from inference_service.predict_service import PredictService
from inference_service.providers import ModelProvider, SingleModel
from inference_service.recheck import RECHECK_SECONDS
from inference_service.routes.error_handlers import install_error_handlers
from inference_service.routes.health import add_health_routes
from inference_service.routes.page import STATIC_DIR, add_page_routes
from inference_service.routes.predict import add_predict_routes
from inference_service.telemetry import Metrics, RequestMiddleware


@dataclass(frozen=True)
class Settings:
    """Everything configurable; ``__main__`` fills it from flags and the environment."""

    model_path: Path
    model_name: str | None = None
    api_key_file: Path | None = None
    allow_anonymous: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_imgsz: int = 2048
    intra_op_threads: int | None = None  # default: every CPU we may use
    inference_workers: int | None = None  # concurrent inferences splitting the threads; None: adaptive (lanes.py)
    samples_dir: Path | None = None  # default: samples/ next to the model
    max_concurrency: int = 4  # predicts decoding or inferring at once: the Cloud Run concurrency
    max_queue: int = 64  # predicts waiting for a turn at most, whatever their expected wait: bounds memory
    max_wait_seconds: float = 5.0  # a predict expected to wait longer for a turn is refused with 503
    request_timeout: float = 60.0  # seconds, as Cloud Run's request timeout
    secrets_recheck_seconds: float = RECHECK_SECONDS  # how often to look for a rotated key file (recheck.py)

    @property
    def threads(self) -> int:
        """onnxruntime's threads in all: ``intra_op_threads``, default every CPU."""
        return self.intra_op_threads or cpu_count()

    @property
    def threads_per_inference(self) -> int:
        """The full session's threads: all of them, or their share with a fixed number of workers."""
        return max(1, self.threads // (self.inference_workers or 1))

    def gate(self) -> InferenceGate:
        """Adaptive: one token per thread. Fixed: one per worker."""
        return InferenceGate(self.inference_workers or self.threads, adaptive=self.inference_workers is None)


def create_app(settings: Settings) -> FastAPI:
    """The app of one dedicated endpoint: its model loads in the background once the app starts."""
    metrics = Metrics()
    return build_app(settings, metrics, SingleModel(settings, metrics), PredictService(settings, metrics))


def build_app(settings: Settings, metrics: Metrics, provider: ModelProvider, predict: PredictService) -> FastAPI:
    """Middleware, the error format, health and metrics, the dedicated predict routes (on ``provider``'s model,
    run by ``predict``) and the Test page. ``metrics`` is the registry the middleware and ``/metrics`` use."""
    keys = KeyStore(None if settings.allow_anonymous else settings.api_key_file, settings.secrets_recheck_seconds)
    if keys.anonymous and not settings.allow_anonymous:
        raise ValueError("an API key file is required unless allow_anonymous is set")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        provider.start()
        yield
        predict.close()

    app = FastAPI(title="YOLO inference server", version=__version__, lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body=settings.max_body_bytes)
    app.state.provider = provider
    install_error_handlers(app, settings.max_body_bytes)
    add_health_routes(app.router, provider, metrics)
    add_predict_routes(app.router, predict, keys, provider)
    add_page_routes(app.router, provider, keys, settings.samples_dir or settings.model_path.parent / "samples")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
