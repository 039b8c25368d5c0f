"""Shared (multi-tenant) mode: ``POST /api/models/{owner}/{project}/{model}/predict`` for every tenant's models.

Checks run in this order, each with a JSON error: the key (401), the path segments (400), the key's tenant
owns the path (403), the tenant's data lives in this region (else 307), the tenant's rate (429), the model
file (404, or 424 if it will not load). Everything after that is the dedicated handler, unchanged.
``GET /api/models/{owner}/{project}/{model}/info`` runs the same checks and answers the model's facts (task,
default imgsz, end-to-end or not), which the Test page needs for its iou control.

A tenant whose data lives in another region is **redirected, not proxied**: its models exist only in
that region's bucket, and proxying would carry the tenant's images through a region they must not pass
through. The 307 keeps method and body; the client resends to the peer (with its key: HTTP clients drop
``Authorization`` on a cross-host redirect, so it must re-attach it). Clients using the global domain
never see it: the load balancer already routes each tenant's path to its data region. The Test page opened on
another region's host is such a client: browsers follow the 307 but drop the key, so the page resends to the
peer itself, which is why the peers' origins may call this service from a browser (CORS, ``peer_cors``).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from inference_service.app import build_app
from inference_service.auth import AuthError
from inference_service.device import concrete
from inference_service.errors import InputError
from inference_service.model import Model
from inference_service.params import OPENAPI_FORM
from inference_service.predict_service import PredictService
from inference_service.providers import model_facts
from inference_service.registry import ModelError, ModelRegistry
from inference_service.routes.error_handlers import error
from inference_service.settings import ServerSettings
from inference_service.telemetry import Metrics
from inference_service.tenancy import Tenant, TenantsFile

ROUTE = "/api/models/{owner}/{project}/{model}/predict"
INFO_ROUTE = "/api/models/{owner}/{project}/{model}/info"


class RateLimiter:
    """A token bucket per tenant: ``burst`` requests at once, refilled at ``rps``."""

    def __init__(self, rps: float, burst: int) -> None:
        self.rps, self.burst = rps, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, tenant: str) -> float:
        """Take a token: 0 if one was there, else how long until one will be (nothing taken)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rps)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
            return (1 - tokens) / self.rps


class SharedModels:
    """The ``ModelProvider`` of shared mode: always ready (models load per request); the dedicated paths serve
    no model here."""

    def __init__(self, region: str, registry: ModelRegistry, metrics: Metrics) -> None:
        self.region, self.registry, self.metrics = region, registry, metrics

    def start(self) -> None:
        self.metrics.model_ready.set(1)  # as /health says: ready from the start

    def status(self) -> tuple[str, str | None]:
        return "ready", None

    def get(self) -> Model:
        raise HTTPException(404, f"this is a shared service: POST {ROUTE}")

    def latency_ms(self) -> float:
        return self.registry.last_inference_ms

    def page_info(self) -> dict[str, Any]:
        """The Test page asks for a tenant key and owner/project/model, and posts to the shared route."""
        return {"mode": "shared", "predictPath": ROUTE, "infoPath": INFO_ROUTE, "region": self.region,
                "authRequired": True}


class TenantAccess:
    """The checks of the module docstring, in order, before a tenant's model serves a request."""

    def __init__(self, tenants: TenantsFile, registry: ModelRegistry, shared: ServerSettings) -> None:
        self.tenants, self.registry, self.shared = tenants, registry, shared
        self.limiter = RateLimiter(shared.rate_limit_rps, shared.rate_limit_burst)

    def tenant_of(self, request: Request) -> Tenant:
        scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        tenant = self.tenants.current().owner_of_key(key.strip())
        if tenant is None:
            raise AuthError("invalid API key")
        return tenant

    async def model(self, request: Request, owner: str, project: str, model: str) -> Model | JSONResponse:
        """The loaded model, or the JSON error to answer with."""
        tenant = self.tenant_of(request)
        self.registry.path_for(owner, project, model)  # 400 on a bad segment, before anything else looks at it
        if owner != tenant.owner:
            return error(403, f"this API key does not give access to {owner}'s models", "owner")
        if tenant.data_region != self.shared.region:
            return self._elsewhere(request, tenant, project, model)
        if wait := self.limiter.wait_seconds(owner):
            return error(429, f"rate limit of {self.shared.rate_limit_rps:g} requests/s for {owner} exceeded; "
                         "retry later", headers={"Retry-After": str(math.ceil(wait))})
        loaded = await run_in_threadpool(self.registry.get, owner, project, model)
        if reason := loaded.unsupported():
            raise InputError(reason, None, 422)
        return loaded

    def _elsewhere(self, request: Request, tenant: Tenant, project: str, model: str) -> JSONResponse:
        """A tenant whose data lives in another region: 307 to that region's peer, 503 if there is none."""
        owner, region = tenant.owner, tenant.data_region
        peer = self.shared.peers.get(region)
        if peer is None:
            return error(503, f"{owner}'s models are served in {region}, and this service ({self.shared.region}) "
                         "has no peer URL for that region", headers={"Retry-After": "60"})
        query = f"?{request.url.query}" if request.url.query else ""
        route = request.url.path.rsplit("/", 1)[1]
        location = f"{peer.rstrip('/')}/api/models/{owner}/{project}/{model}/{route}{query}"
        return error(307, f"{owner}'s models are served in {region}: resend to {location}",
                     headers={"Location": location})


def add_tenant_routes(router: APIRouter, access: TenantAccess, service: PredictService) -> None:
    """Predict and model facts at a tenant's model path, after ``access``'s checks."""
    @router.post(ROUTE, summary="Run a tenant's model on one image", response_model=None, openapi_extra=OPENAPI_FORM)
    async def predict(request: Request, owner: str, project: str, model: str) -> JSONResponse:
        loaded = await access.model(request, owner, project, model)
        if isinstance(loaded, JSONResponse):
            return loaded
        result = await service.handle(request, loaded)
        access.registry.last_inference_ms = loaded.last_inference_ms
        return result

    @router.get(INFO_ROUTE, summary="A tenant's model: task, default imgsz, end-to-end (the Test page's iou control)",
                response_model=None)
    async def model_info(request: Request, owner: str, project: str, model: str) -> dict[str, Any] | JSONResponse:
        loaded = await access.model(request, owner, project, model)
        return loaded if isinstance(loaded, JSONResponse) else model_facts(loaded.info)


def create_shared_app(shared: ServerSettings) -> FastAPI:
    """The dedicated app (health, metrics, error format, Test page) plus the per-tenant routes. ``shared`` is in
    shared mode, so it names a region among the shared ones (settings.py checks it)."""
    assert shared.mode == "shared" and shared.region and shared.models_dir and shared.tenants_file
    tenants = TenantsFile(shared.tenants_file, shared.shared_regions, shared.secrets_recheck_seconds)
    # one session per tenant model (no lane sessions: the cache budget counts one): fixed workers, default 1
    settings = shared.model_copy(update={"inference_workers": shared.inference_workers or 1,
                                         "device": concrete(shared.device)})
    metrics = Metrics()
    registry = ModelRegistry(shared.models_dir, shared.model_cache_bytes, metrics, settings.threads_per_inference,
                             settings.device)
    predict = PredictService(settings, metrics)
    app = build_app(settings, metrics, SharedModels(shared.region, registry, metrics), predict)

    @app.exception_handler(ModelError)
    async def _model_error(_: Request, exc: ModelError) -> JSONResponse:
        return error(exc.status, exc.message, exc.field)

    add_tenant_routes(app.router, TenantAccess(tenants, registry, shared), predict)
    peer_cors(app, shared.peers)
    return app


def peer_cors(app: FastAPI, peers: dict[str, str]) -> None:
    """Let the Test page served by another shared region call this one from the browser, key and all: it is sent
    here by a 307 for a tenant whose data lives here. Only the peers' origins, only with a bearer key (no
    cookies, so no ambient credentials a foreign page could ride on)."""
    origins = sorted({f"{url.scheme}://{url.netloc}" for url in map(urlsplit, peers.values())})
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization"], expose_headers=["retry-after"])
