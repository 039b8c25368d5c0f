"""Logs Cloud Logging parses, Prometheus metrics, and the one ASGI middleware that records both.

Cloud Run forwards stdout to Cloud Logging, which lifts ``severity``, ``httpRequest`` and
``logging.googleapis.com/trace`` out of one-line JSON records; nothing else is needed in the container.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SEVERITY = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING", logging.ERROR: "ERROR",
            logging.CRITICAL: "CRITICAL"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger("inference_service")


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the field names Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)  # Error Reporting reads the traceback
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Route every logger (ours, uvicorn's) through the JSON formatter on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def trace_fields(headers: dict[str, str], project: str | None) -> dict[str, Any]:
    """Trace correlation from ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` or W3C ``traceparent``."""
    trace = span = None
    sampled = False
    if value := headers.get("x-cloud-trace-context"):
        trace, _, rest = value.partition("/")
        span, _, options = rest.partition(";")
        sampled = options == "o=1"
    elif value := headers.get("traceparent"):
        parts = value.split("-")
        if len(parts) == 4:
            trace, span, sampled = parts[1], parts[2], parts[3].endswith("1")
    if not trace:
        return {}
    fields: dict[str, Any] = {
        "logging.googleapis.com/trace": f"projects/{project}/traces/{trace}" if project else trace,
        "logging.googleapis.com/trace_sampled": sampled,
    }
    if span:
        fields["logging.googleapis.com/spanId"] = span
    return fields


class Metrics:
    """The server's Prometheus metrics, in a registry of its own so several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests by route and status code",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "Time from request to last response byte",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stage = Histogram("inference_stage_seconds", "Time per predict stage: preprocess, inference, postprocess",
                               ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_ready = Gauge("model_ready", "1 once the server can serve: its model loaded and warm (shared mode: "
                                 "from the start, models load per request)", registry=self.registry)
        self.provider = Gauge("inference_provider", "1 for the onnxruntime execution provider inference runs on",
                              ["provider"], registry=self.registry)


class TooLarge(Exception):
    """The request body passed the size cap while streaming in (no or lying Content-Length)."""


class RequestMiddleware:
    """Per request: refuse bodies over the cap early (413), then count, time and log it.

    Pure ASGI rather than ``BaseHTTPMiddleware``: it adds microseconds, not a task and a queue.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int, project: str | None = None) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        state = {"status": 500, "sent": 0, "received": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["sent"] += len(message.get("body", b""))
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.max_body:
                raise TooLarge
            return message

        try:
            if content_length(headers) > self.max_body:
                await send_error(send_wrapper, 413, too_large_message(self.max_body), "file")  # as the streamed 413
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            self._record(scope, headers, state, time.perf_counter() - start)

    def _record(self, scope: Scope, headers: dict[str, str], state: dict[str, int], seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        status = state["status"]
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        query = scope.get("query_string", b"").decode("latin-1")
        fields = {
            "httpRequest": {
                "requestMethod": scope["method"],
                "requestUrl": scope["path"] + (f"?{query}" if query else ""),
                "status": status,
                "latency": f"{seconds:.6f}s",
                "userAgent": headers.get("user-agent", ""),
                "remoteIp": (scope.get("client") or ("", 0))[0],
                "requestSize": str(content_length(headers)),
                "responseSize": str(state["sent"]),
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            },
            **trace_fields(headers, self.project),
        }
        # 503 is the server saying "not now" (loading, at capacity) with Retry-After: one ERROR line per refused
        # request would bury real faults in Cloud Logging during exactly the overloads worth reading about.
        level = (logging.ERROR if status >= 500 and status != 503 else logging.WARNING if status >= 400
                 else logging.INFO)
        log.log(level, "%s %s %d %.1fms", scope["method"], scope["path"], status, seconds * 1000,
                extra={"fields": fields})


def content_length(headers: dict[str, str]) -> int:
    """The declared body size, 0 when absent or not a number (the body cap still counts what streams in)."""
    try:
        return max(int(headers.get("content-length", "0")), 0)
    except ValueError:
        return 0


def too_large_message(max_body: int) -> str:
    """In the unit the limit is set in (MAX_UPLOAD_MB is MiB): a 20 MiB cap reads 20, not 20.9715."""
    return f"request body is over the {max_body / 2**20:g} MiB limit (MAX_UPLOAD_MB)"


async def send_error(send: Send, status: int, message: str, field: str | None = None) -> None:
    """A JSON error straight on the ASGI channel, for answers given before the app runs."""
    body = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
