"""Form fields of a predict request, validated into typed values or an ``InputError`` naming the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from inference_service.errors import InputError
from inference_service.letterbox import grid_cells
from inference_service.model import ModelInfo

FIELDS = ("file", "source", "conf", "iou", "imgsz", "normalize", "decimals", "vid_stride", "bits")
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


@dataclass(frozen=True)
class PredictParams:
    """The knobs of one request, with the reference defaults (conf 0.25, iou 0.7, imgsz from the model)."""

    conf: float = 0.25
    iou: float = 0.7
    imgsz: tuple[int, int] | None = None  # None: the model's own
    normalize: bool = False
    decimals: int = 5  # what ultralytics ``Results.summary`` rounds to


ERROR_BODY = {"application/json": {"schema": {
    "type": "object",
    "required": ["error", "field"],
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}}}
OPENAPI_FORM = {  # the predict routes read the form by hand, so FastAPI cannot describe it: this does, for clients
    "responses": {"4XX": {"description": "what is wrong, and the form field to blame if any", "content": ERROR_BODY}},
    "requestBody": {  # and for the schemathesis run against /openapi.json
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "additionalProperties": False,
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "the image: JPEG, PNG, WebP or BMP"},
                "conf": {"type": "number", "minimum": 0, "maximum": 1, "default": PredictParams.conf,
                         "description": "confidence threshold"},
                "iou": {"type": "number", "minimum": 0, "maximum": 1, "default": PredictParams.iou,
                        "description": "NMS IoU threshold"},
                "imgsz": {"type": "integer", "minimum": 1,
                          "description": "input size: a multiple of the model stride; default the model's own"},
                "normalize": {"type": "boolean", "default": False, "description": "boxes as fractions of the image"},
                "decimals": {"type": "integer", "minimum": 0, "maximum": 10, "default": PredictParams.decimals},
            },
        }}},
    },
}


def _fraction(form: Mapping[str, str], field: str, default: float) -> float:
    raw = form.get(field)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{field} must be a number between 0 and 1, got {raw!r}", field) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InputError(f"{field} must be between 0 and 1, got {raw!r}", field)
    return value


def _integer(form: Mapping[str, str], field: str) -> int | None:
    raw = form.get(field)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise InputError(f"{field} must be an integer, got {raw!r}", field) from None


DEPLOYMENT_PATH = {"parameters": [  # accepted for the Ultralytics URL shape; a dedicated endpoint serves one model
    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in ("owner", "deployment")
]}


def min_imgsz(info: ModelInfo) -> int:
    """One stride; for an end-to-end export, the smallest square whose grid holds its top-k (else it fails)."""
    size = info.stride
    while info.max_det and grid_cells(size, size, info.stride) < info.max_det:
        size += info.stride
    return size


def parse_params(form: Mapping[str, str], info: ModelInfo, max_imgsz: int) -> PredictParams:
    """Validate the non-file fields; unknown, unsupported or out-of-range fields are refused, never ignored."""
    for field in form:
        if field not in FIELDS:
            raise InputError(f"unknown form field {field!r}; accepted: {', '.join(FIELDS)}", field)
    for field in ("vid_stride", "bits"):
        if field in form:
            raise InputError(f"{field} applies to video and depth models; this endpoint serves an image "
                             f"'{info.task}' model", field)
    imgsz = None
    size = _integer(form, "imgsz")
    if size is not None:
        low = min_imgsz(info)
        if not low <= size <= max_imgsz:
            why = f" (an end-to-end model's top {info.max_det} boxes need that grid)" if low > info.stride else ""
            raise InputError(f"imgsz must be between {low} and {max_imgsz}, got {size}{why}", "imgsz")
        if size % info.stride:
            raise InputError(f"imgsz must be a multiple of the model stride {info.stride}, got {size}", "imgsz")
        if not info.dynamic and (size, size) != info.imgsz:
            raise InputError(f"this model was exported with a fixed {info.imgsz[0]}x{info.imgsz[1]} input; "
                             f"imgsz must be {info.imgsz[0]}", "imgsz")
        imgsz = (size, size)
    decimals = _integer(form, "decimals")
    if decimals is not None and not 0 <= decimals <= 10:
        raise InputError(f"decimals must be between 0 and 10, got {decimals}", "decimals")
    normalize = form.get("normalize", "false").strip().lower()
    if normalize not in TRUE | FALSE:
        raise InputError(f"normalize must be true or false, got {form['normalize']!r}", "normalize")
    return PredictParams(
        conf=_fraction(form, "conf", PredictParams.conf),
        iou=_fraction(form, "iou", PredictParams.iou),
        imgsz=imgsz,
        normalize=normalize in TRUE,
        decimals=PredictParams.decimals if decimals is None else decimals,
    )
