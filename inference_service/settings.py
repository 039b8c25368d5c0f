"""The server's settings, defined once: env name, default, validation and description of each.

``python -m inference_service`` reads them (its flags override the environment, which overrides the defaults),
and the infrastructure builds each Cloud Run service's environment from the same class with ``service_env``,
so a setting the plan passes is a setting the server reads. The env name of a field is its name upper-cased.
Only pydantic and pydantic-settings are imported here: ``fleet plan`` imports this module, and must not pay for
onnxruntime or FastAPI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from inference_service.lanes import InferenceGate
from inference_service.recheck import RECHECK_SECONDS

DRAIN_S = 8  # Cloud Run's SIGKILL comes 10 s after SIGTERM; 2 s are left for lifespan shutdown and exit
MAX_WAIT_S = 5.0  # default wait limit: a burst is served with seconds of queueing, an overload refused in time
QUEUE_PER_TURN = 16  # default hard bound on waiting predicts, per concurrent turn
MIB = 1024 * 1024


def _items(value: object) -> object:
    """A comma-separated env value as a list of its non-empty items; other values (a flag's list) unchanged."""
    return [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value


class ServerSettings(BaseSettings):
    """Everything the server can be told. Field ``json_schema_extra["flag"]`` names its command-line flag when
    that is not ``--`` + the field name with dashes."""

    model_config = SettingsConfigDict(extra="forbid", env_ignore_empty=True)

    mode: Literal["dedicated", "shared"] = Field(
        "dedicated", description="one model (dedicated), or every tenant's models under MODELS_DIR (shared)")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on (Cloud Run sets it)")
    model_path: Path | None = Field(
        None, json_schema_extra={"flag": "--model"},
        description="dedicated: the ONNX file exported by ultralytics (required in dedicated mode)")
    model_name: str | None = Field(None, description="dedicated: the model's name in responses (default: file stem)")
    api_key_file: Path | None = Field(
        None, description="file of sha256 hex digests of accepted API keys, one per line")
    allow_anonymous: bool = Field(False, description="serve without API keys (local testing only)")
    ort_threads: int | None = Field(
        None, ge=1, json_schema_extra={"flag": "--threads"},
        description="onnxruntime intra-op threads in all (default: the CPUs available; services get their vCPUs)")
    inference_workers: int | None = Field(
        None, ge=1, description="a fixed number of concurrent inferences splitting the threads (default: adaptive,"
        " every thread for a lone request, one thread each when requests overlap; shared mode: 1)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime has the CUDA provider and a GPU is visible, else the CPU; "
                            "cuda: the GPU or a start-up error (exit 2), never the CPU (the plan sets it on GPU "
                            "services)")
    max_upload_mb: float = Field(20.0, gt=0, description="request body cap in MiB: 413 above it")
    max_pixels: int = Field(50_000_000, ge=1, description="decoded image size cap in pixels: 422 above it")
    max_imgsz: int = Field(2048, ge=32, description="largest imgsz a request may ask for")
    max_concurrency: int = Field(
        4, ge=1, description="predicts decoding or inferring at once (services get their Cloud Run concurrency)")
    max_queue: int = Field(
        default_factory=lambda given: QUEUE_PER_TURN * given.get("max_concurrency", 1), ge=0,
        description=f"predicts waiting for a turn at most, whatever their expected wait (default: {QUEUE_PER_TURN}"
        " x MAX_CONCURRENCY)")
    request_timeout: float = Field(
        60.0, gt=0, description="seconds a request may take: 408 if its body has not arrived, 504 if its answer is "
        "not ready (services get their Cloud Run request timeout)")
    drain_seconds: int = Field(
        DRAIN_S, ge=0, description="after SIGTERM, how long requests in flight may take before the process exits "
        "(Cloud Run kills it 10 s after SIGTERM; other platforms' grace periods may allow more)")
    max_wait_seconds: float = Field(
        default_factory=lambda given: min(MAX_WAIT_S, given.get("request_timeout", 4 * MAX_WAIT_S) / 4), ge=0,
        description="a predict waits for a turn while its expected wait is at most this, else 503 + Retry-After "
        f"(default: {MAX_WAIT_S:g} s or a quarter of REQUEST_TIMEOUT, whichever is less)")
    secrets_recheck_seconds: float = Field(
        RECHECK_SECONDS, ge=0, description="look for a new version of the key and tenants files at most this often "
        "(each look at a mounted secret is a Secret Manager access)")
    samples_dir: Path | None = Field(
        None, description="the Test page's sample images (default: samples/ beside the model or models dir)")
    ready_message: str | None = Field(
        None, description="printed on stdout once the server accepts requests, {url} replaced by its address")
    models_dir: Path | None = Field(None, description="shared: DIR/{owner}/{project}/{model}.onnx (required)")
    tenants_file: Path | None = Field(None, description="shared: the tenants YAML file (required)")
    region: str | None = Field(None, description="shared: this service's region id, one of SHARED_REGIONS")
    shared_regions: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="shared: the catalog's shared region ids, comma-separated (required): where tenants' "
        "data may live")
    peers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, json_schema_extra={"flag": "--peer"},
        description="shared: the other shared regions' URLs, comma-separated REGION_ID=URL pairs (flag repeatable)")
    model_cache_mb: float = Field(
        2048.0, gt=0, json_schema_extra={"flag": "--cache-mb"},
        description="shared: memory for cached tenant models in MiB, each estimated as 3x its file size")
    rate_limit_rps: float = Field(10.0, gt=0, description="shared: requests per second per tenant")
    rate_limit_burst: int = Field(20, ge=1, description="shared: requests a tenant may send at once")

    @field_validator("shared_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        return _items(value)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: object) -> object:
        pairs = _items(value)
        if not isinstance(pairs, list):
            return pairs  # a mapping already, or something the field's own check refuses
        peers = {}
        for pair in pairs:
            region, sep, url = str(pair).partition("=")
            if not sep or not region.strip() or not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"expected REGION_ID=URL with an http(s) URL, not {pair!r}")
            peers[region.strip()] = url.strip()
        return peers

    @model_validator(mode="after")
    def _check_together(self) -> ServerSettings:
        """What no single field can check."""
        if not self.max_wait_seconds < self.request_timeout:
            raise ValueError(
                f"--max-wait-seconds (MAX_WAIT_SECONDS) {self.max_wait_seconds:g} must be at least 0 and below "
                f"--request-timeout (REQUEST_TIMEOUT) {self.request_timeout:g}: a predict admitted to wait longer "
                "would time out (504) instead of being refused at once (503)")
        if self.mode == "shared":
            self._check_shared()
        elif self.model_path is None:
            raise ValueError(f"{flag('model_path')} (or {env_name('model_path')}) is required")
        return self

    def _check_shared(self) -> None:
        for name in ("models_dir", "tenants_file", "region", "shared_regions"):
            if not getattr(self, name):
                raise ValueError(f"{flag(name)} (or {env_name(name)}) is required in shared mode")
        regions = ", ".join(self.shared_regions)
        if self.region not in self.shared_regions:
            raise ValueError(f"--region (REGION) {self.region!r} is not a shared region; use one of {regions} "
                             "(SHARED_REGIONS)")
        for region, url in self.peers.items():
            if region not in self.shared_regions:
                raise ValueError(f"--peer (PEERS) '{region}={url}': expected REGION_ID=URL with a shared region id,"
                                 f" one of {regions} (SHARED_REGIONS)")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def model_cache_bytes(self) -> int:
        return int(self.model_cache_mb * MIB)

    @property
    def threads(self) -> int:
        """onnxruntime's threads in all: ``ort_threads``, default every CPU."""
        from inference_service.model import cpu_count  # onnxruntime: only the server pays for it

        return self.ort_threads or cpu_count()

    @property
    def threads_per_inference(self) -> int:
        """The full session's threads: all of them, or their share with a fixed number of workers."""
        return max(1, self.threads // (self.inference_workers or 1))

    def gate(self) -> InferenceGate:
        """Adaptive: one token per thread. Fixed: one per worker."""
        return InferenceGate(self.inference_workers or self.threads, adaptive=self.inference_workers is None)


class _GivenValues(ServerSettings):
    """The same fields and checks over the values given only, without this process's environment."""

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def env_name(field: str) -> str:
    """The environment variable the server reads ``field`` from."""
    if field not in ServerSettings.model_fields:
        raise KeyError(f"{field!r} is not a server setting (inference_service/settings.py)")
    return field.upper()


def flag(field: str) -> str:
    """The command-line flag of ``field``."""
    extra = ServerSettings.model_fields[field].json_schema_extra
    return str(extra["flag"]) if isinstance(extra, dict) and "flag" in extra else f"--{field.replace('_', '-')}"


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


_CHECKED: dict[str, dict[str, str]] = {}  # a check costs ~1 ms, and most of a fleet's services repeat one


def service_env(**fields: Any) -> dict[str, str]:
    """A service's environment from server settings by field name, checked as the server will check it: a
    misspelt field or a value the server would refuse raises ``ValueError`` when the plan is built. ``None``
    values are left out (the server's default applies)."""
    given = {k: v for k, v in fields.items() if v is not None}
    key = repr(sorted(given.items()))
    if key not in _CHECKED:
        try:
            checked = _GivenValues(**given)
        except ValidationError as e:
            raise ValueError(f"server settings {sorted(given)}: {one_line(e)}") from None
        _CHECKED[key] = {env_name(k): _env_value(getattr(checked, k)) for k in given}
    return dict(_CHECKED[key])


def one_line(error: ValidationError) -> str:
    """The first problem of ``error`` in one line, naming the flag and env var of the setting at fault."""
    first = error.errors(include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return message
    field = str(first["loc"][0])
    if field not in ServerSettings.model_fields:
        return f"{field}: not a server setting"
    return f"{flag(field)} ({env_name(field)}): invalid value {first.get('input')!r}: {message}"
