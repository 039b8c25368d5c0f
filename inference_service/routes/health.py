"""Readiness (the Cloud Run startup probe, at the dedicated and the deployment path) and Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference_service.params import DEPLOYMENT_PATH
from inference_service.providers import ModelProvider
from inference_service.telemetry import Metrics


def add_health_routes(router: APIRouter, provider: ModelProvider, metrics: Metrics, execution_provider: str) -> None:
    """``GET /health`` (and its deployment path): 200 once ``provider``'s model is ready, else 503, naming the
    onnxruntime execution provider it runs on (a GPU service must say CUDA); ``/metrics``."""

    # A coroutine: it only reads the provider's state, and FastAPI runs a plain ``def`` route in a worker thread,
    # a hop there and back that cost 0.5 ms of every probe here (2.08 against 1.58 ms round trip).
    async def health() -> JSONResponse:
        state, err = provider.status()
        latency = provider.latency_ms() if state == "ready" else 0.0
        body = {"healthy": state == "ready", "status": state, "latencyMs": round(latency, 2), "error": err,
                "provider": execution_provider}
        return JSONResponse(body, status_code=200 if state == "ready" else 503)

    router.get("/health", summary="Readiness (the Cloud Run startup probe)")(health)
    router.get("/api/deployments/{owner}/{deployment}/health", summary="Readiness, deployment path",
               openapi_extra=DEPLOYMENT_PATH)(health)

    @router.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
