"""The server app: FastAPI over the predict pipeline, in the Ultralytics predict wire format.

``create_app`` builds a dedicated endpoint's; shared mode (shared.py) adds its routes to ``build_app``'s. The
parts, one module each: predict_service.py (admission, worker threads, the CPU work), providers.py (where the
model comes from), routes/ (the error format and the routes of predict, health and metrics, the Test page).
"""


from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from inference_service import __version__
from inference_service.auth import KeyStore
from inference_service.device import PROVIDERS, concrete
from inference_service.predict_service import PredictService
from inference_service.providers import ModelProvider, SingleModel
from inference_service.routes.error_handlers import install_error_handlers
from inference_service.routes.health import add_health_routes
from inference_service.routes.page import STATIC_DIR, add_page_routes
from inference_service.routes.predict import add_predict_routes
from inference_service.settings import ServerSettings as Settings  # app.Settings: what create_app takes
from inference_service.telemetry import Metrics, RequestMiddleware


def create_app(settings: Settings) -> FastAPI:
    """The app of one dedicated endpoint: its model loads in the background once the app starts."""
    # `python -m inference_service` resolves the device before the port opens; an app made in-process may not have
    settings = settings.model_copy(update={"device": concrete(settings.device)})
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
    metrics.provider.labels(PROVIDERS[settings.device][0]).set(1)  # the device is concrete here (create_app's)
    install_error_handlers(app, settings.max_body_bytes)
    add_health_routes(app.router, provider, metrics, PROVIDERS[settings.device][0])
    add_predict_routes(app.router, predict, keys, provider)
    assert settings.model_path is not None, "dedicated mode names a model; shared mode its models dir"
    add_page_routes(app.router, provider, keys, settings.samples_dir or settings.model_path.parent / "samples")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
