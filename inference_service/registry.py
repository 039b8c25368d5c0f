"""Shared mode's models: ``DIR/{owner}/{project}/{model}.onnx`` loaded on first use, kept in an LRU cache.

The cache is bounded by an estimate of memory, not a count: a model's cost is its file size times
``MEMORY_FACTOR``: an onnxruntime CPU session holds the weights once more as the optimised graph's
initialisers, plus arena buffers sized by the activations. Measured here: each further 9.6 MB demo export
(640x640, 1 thread) adds ~25 MB of resident memory (2.6x); 3x leaves a margin. The estimate is what the bound counts, so
set ``--cache-mb`` to what the container may spend on models (memory limit minus ~500 MB for Python).

A cached model is served only while its file is the one it was loaded from (same mtime and size, one
``stat`` per request): a tenant who re-uploads gets the new model, one who deletes it gets 404, one who
uploads garbage gets 424, and the other tenants are served throughout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from prometheus_client import Counter, Gauge

from inference_service.model import Model
from inference_service.telemetry import Metrics
from inference_service.tenancy import safe_segment

MEMORY_FACTOR = 3

log = logging.getLogger("inference_service")

Key = tuple[str, str, str]
Stamp = tuple[int, int] | None  # (mtime ns, size) of a model file; None when it is gone


def file_stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ModelError(Exception):
    """A model that cannot be served, answered as JSON with ``status``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ModelRegistry:
    """Resolves (owner, project, model) to a loaded ``Model``; thread-safe, one load per model at a time."""

    def __init__(self, models_dir: Path, cache_bytes: int, metrics: Metrics, intra_op_threads: int | None = None,
                 device: str = "cpu"):
        self.root = models_dir.resolve()
        self.cache_bytes = cache_bytes
        self.threads = intra_op_threads
        self.device = device
        self._cache: OrderedDict[Key, tuple[Model, int, Stamp]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}
        self.last_inference_ms = 0.0
        r = metrics.registry
        self.cold_loads = Counter("model_cold_loads_total", "Models loaded from the models dir (cache misses)",
                                  ["owner"], registry=r)
        self.load_failures = Counter("model_load_failures_total", "Model files that failed to load", ["owner"],
                                     registry=r)
        self.evictions = Counter("model_cache_evictions_total", "Models dropped from the cache to fit the bound",
                                 registry=r)
        self.cached = Gauge("model_cache_models", "Models held in the cache", registry=r)
        self.cached_bytes = Gauge("model_cache_bytes", "Estimated memory of the cached models", registry=r)
        Gauge("model_cache_limit_bytes", "The cache bound (--cache-mb)", registry=r).set(cache_bytes)

    def path_for(self, owner: str, project: str, model: str) -> Path:
        """The model file, or 400 for a segment that could leave its directory; never a path outside the root."""
        for field, value in (("owner", owner), ("project", project), ("model", model)):
            if not safe_segment(value):
                raise ModelError(400, f"invalid {field} {value!r}: use 1-64 letters, digits, '.', '_' or '-' "
                                 "(no '..')", field)
        path = (self.root / owner / project / f"{model}.onnx").resolve()
        if not path.is_relative_to(self.root):  # a symlink in the bucket pointing elsewhere
            raise ModelError(404, f"model {owner}/{project}/{model} not found")
        return path

    def get(self, owner: str, project: str, model: str) -> Model:
        """The cached model, or load it (a cold load); 404 if there is no such file, 424 if it will not load."""
        key = (owner, project, model)
        path = self.path_for(*key)
        stamp = file_stamp(path)
        if cached := self._cached(key, stamp):
            return cached
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # concurrent first requests for one model wait for a single load
            try:
                if cached := self._cached(key, stamp):
                    return cached
                loaded, cost = self._load(key, path)
                with self._lock:
                    self._insert(key, loaded, cost, stamp)
                return loaded
            finally:  # also after a 404 or a failed load: unknown names must not pile up locks
                with self._lock:
                    self._loading.pop(key, None)

    def _cached(self, key: Key, stamp: Stamp) -> Model | None:
        """The cached model if its file has not changed since it was loaded; a changed or removed file drops it."""
        with self._lock:
            if key not in self._cache:
                return None
            loaded, _, loaded_from = self._cache[key]
            if loaded_from == stamp:
                self._cache.move_to_end(key)
                return loaded
            del self._cache[key]
            self._count()
        log.info("model %s %s since it was loaded", "/".join(key), "was removed" if stamp is None else "changed")
        return None

    def _load(self, key: Key, path: Path) -> tuple[Model, int]:
        name = "/".join(key)
        if not path.is_file():
            raise ModelError(404, f"model {name} not found")
        started = time.perf_counter()
        try:
            loaded = Model(path, key[2], self.threads, self.device)
        except Exception as e:  # the tenant's file, not the request: report it, keep serving everyone else
            self.load_failures.labels(key[0]).inc()
            log.warning("model %s failed to load: %s: %s", name, type(e).__name__, e)
            raise ModelError(424, f"model {name} could not be loaded: it is not a valid ONNX export "
                             f"({type(e).__name__}); re-upload it") from None
        self.cold_loads.labels(key[0]).inc()
        log.info("model %s loaded in %.0f ms", name, (time.perf_counter() - started) * 1000)
        return loaded, path.stat().st_size * MEMORY_FACTOR

    def _insert(self, key: Key, loaded: Model, cost: int, stamp: Stamp) -> None:
        """Evict least recently used models until ``cost`` fits; a model bigger than the bound is kept alone."""
        while self._cache and self._bytes() + cost > self.cache_bytes:
            evicted, _ = self._cache.popitem(last=False)
            self.evictions.inc()
            log.info("model %s evicted from the cache", "/".join(evicted))
        self._cache[key] = (loaded, cost, stamp)
        self._count()

    def _bytes(self) -> int:
        return sum(cost for _, cost, _ in self._cache.values())

    def _count(self) -> None:
        self.cached.set(len(self._cache))
        self.cached_bytes.set(self._bytes())
