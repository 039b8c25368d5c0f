"""The one error format of every answer: JSON ``{"error": "<what is wrong>", "field": "<form field or null>"}``.

401 for a missing or wrong key, 413 for a body over the cap, 422 for a field (or image) the server cannot use,
503 while the model loads. Client mistakes never become 5xx.
"""

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from inference_service.auth import AuthError
from inference_service.errors import InputError, NotReady
from inference_service.telemetry import TooLarge, too_large_message

log = logging.getLogger("inference_service")


def error(status: int, message: str, field: str | None = None,
          headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    """Answer every exception a route may raise in the error format; ``max_body_bytes`` is the cap 413 names."""

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return error(exc.status, exc.message, exc.field)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return error(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(TooLarge)
    async def _too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return error(413, too_large_message(max_body_bytes), "file")

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


def _field_of(exc: RequestValidationError) -> str | None:
    errors = exc.errors()
    loc = errors[0].get("loc", ()) if errors else ()
    return str(loc[-1]) if loc else None
