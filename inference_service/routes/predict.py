"""The dedicated predict routes: ``POST /predict`` and the same at the Ultralytics deployment path."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from inference_service.auth import KeyStore
from inference_service.errors import InputError
from inference_service.model import Model
from inference_service.params import DEPLOYMENT_PATH, OPENAPI_FORM
from inference_service.predict_service import PredictService
from inference_service.providers import ModelProvider


def add_predict_routes(router: APIRouter, service: PredictService, keys: KeyStore, provider: ModelProvider) -> None:
    """Predicts with a key ``keys`` accepts, on ``provider``'s model, run by ``service``."""
    # Predict's dependencies are async: they take microseconds, and a sync one costs a thread-pool hop, so 32
    # concurrent predicts would start 32 threads, each spreading decode buffers over another malloc arena.
    async def require_key(request: Request) -> None:
        keys.check(request.headers.get("authorization"))

    async def resolve_model() -> Model:
        model = provider.get()
        if reason := model.unsupported():
            raise InputError(reason, None, 422)
        return model

    async def predict(
        request: Request, _: Annotated[None, Depends(require_key)], model: Annotated[Model, Depends(resolve_model)]
    ) -> JSONResponse:
        """Ultralytics-compatible predict: multipart ``file`` plus optional conf, iou, imgsz, normalize, decimals."""
        return await service.handle(request, model)

    router.post("/predict", summary="Run the model on one image", openapi_extra=OPENAPI_FORM)(predict)
    router.post("/api/deployments/{owner}/{deployment}/predict", summary="Run the model, deployment path",
                openapi_extra=OPENAPI_FORM | DEPLOYMENT_PATH)(predict)
