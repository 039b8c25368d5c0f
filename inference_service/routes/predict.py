"""The dedicated predict routes: ``POST /predict`` and the same at the Ultralytics deployment path."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from inference_service.auth import KeyStore
from inference_service.errors import InputError
from inference_service.params import DEPLOYMENT_PATH, OPENAPI_FORM
from inference_service.predict_service import PredictService
from inference_service.providers import ModelProvider


def add_predict_routes(router: APIRouter, service: PredictService, keys: KeyStore, provider: ModelProvider) -> None:
    """Predicts with a key ``keys`` accepts, on ``provider``'s model, run by ``service``."""
    # The key check and the model lookup are plain calls, not FastAPI dependencies: they take microseconds, and
    # solving dependencies took ~0.1 ms of a predict's time on the event loop.
    async def predict(request: Request) -> JSONResponse:
        """Ultralytics-compatible predict: multipart ``file`` plus optional conf, iou, imgsz, normalize, decimals."""
        keys.check(request.headers.get("authorization"))
        model = provider.get()
        if reason := model.unsupported():
            raise InputError(reason, None, 422)
        return await service.handle(request, model)

    router.post("/predict", summary="Run the model on one image", openapi_extra=OPENAPI_FORM)(predict)
    router.post("/api/deployments/{owner}/{deployment}/predict", summary="Run the model, deployment path",
                openapi_extra=OPENAPI_FORM | DEPLOYMENT_PATH)(predict)
