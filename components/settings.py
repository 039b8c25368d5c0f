"""Endpoint settings: every Cloud Run knob an endpoint exposes, with safe defaults and Cloud Run's limits.

Limits are checked here, next to the data, so a wrong value fails in `fleet plan` and in tests instead
of at a user's `pulumi up`. Sources: Cloud Run docs "Configure CPU limits", "Memory limits",
"GPU support for services", "Maximum concurrent requests", "Request timeout" (checked 2026-11).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CPU_CHOICES = (1, 2, 4, 6, 8)
MEMORY_CHOICES_GIB = (2, 4, 8, 16, 24, 32)
# Cloud Run refuses more memory than this per vCPU count, and 6+ vCPU need at least 4 GiB.
MAX_MEMORY_GIB_FOR_CPU = {1: 4, 2: 8, 4: 16, 6: 24, 8: 32}
MIN_MEMORY_GIB_FOR_CPU = {1: 2, 2: 2, 4: 2, 6: 4, 8: 4}
GPU_MIN_CPU = 4
GPU_MIN_MEMORY_GIB = 16
MAX_CONCURRENCY = 1000
MAX_TIMEOUT_SECONDS = 3600
MAX_INSTANCES_CAP = 1000

Ingress = Literal["all", "internal", "internal-and-cloud-load-balancing"]


def memory_gib(value: object) -> int:
    """'4Gi' -> 4. Raises ValueError with the allowed values on anything else."""
    allowed = ", ".join(f"{m}Gi" for m in MEMORY_CHOICES_GIB)
    if not isinstance(value, str) or not value.endswith("Gi") or not value[:-2].isdigit():
        raise ValueError(f"memory must be one of {allowed} (got {value!r})")
    gib = int(value[:-2])
    if gib not in MEMORY_CHOICES_GIB:
        raise ValueError(f"memory must be one of {allowed} (got {value!r})")
    return gib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class EndpointSettings(_Strict):
    """The resolved settings of one Cloud Run service (defaults merged with every override)."""

    cpu: int = Field(2, description="vCPUs per instance", json_schema_extra={"enum": list(CPU_CHOICES)})
    memory: str = Field("4Gi", description="memory per instance, within Cloud Run's bounds for the CPU count: "
                        + ", ".join(f"{c} vCPU {MIN_MEMORY_GIB_FOR_CPU[c]}-{MAX_MEMORY_GIB_FOR_CPU[c]}Gi"
                                    for c in CPU_CHOICES),
                        json_schema_extra={"enum": [f"{m}Gi" for m in MEMORY_CHOICES_GIB]})
    gpu: bool = Field(False, description="attach one nvidia-l4 (needs >= 4 vCPU, >= 16Gi, cpu_idle false)")
    gpu_zonal_redundancy: bool = Field(False, description="reserve GPU capacity in other zones (costs more)")
    min_instances: int = Field(0, ge=0, description="0 scales to zero; > 0 keeps instances warm (no cold start)")
    max_instances: int = Field(10, ge=1, le=MAX_INSTANCES_CAP,
                               description="the most instances Cloud Run starts; caps cost and the load on a model")
    concurrency: int = Field(4, ge=1, le=MAX_CONCURRENCY, description="requests one instance takes at once")
    timeout_seconds: int = Field(60, ge=1, le=MAX_TIMEOUT_SECONDS,
                                 description="Cloud Run's request timeout; the server gets it as REQUEST_TIMEOUT")
    cpu_idle: bool = Field(True, description="CPU only during requests (request-based billing)")
    startup_cpu_boost: bool = Field(True, description="extra CPU while starting: shorter cold starts")
    public: bool = Field(False, description="anyone may invoke at the Cloud Run level (the server still checks "
                                            "API keys); false requires Google IAM identity tokens")
    ingress: Ingress = Field("all", description="where requests may come from: all (the internet), internal (the "
                                                "project's VPC networks), internal-and-cloud-load-balancing (those and "
                                                "the project's load balancers: the shared services)")
    execution_environment: Literal["gen1", "gen2"] = Field(
        "gen2", description="Cloud Run's sandbox; shared services need gen2 to mount their model bucket")
    alert_error_ratio: float = Field(0.05, gt=0, le=1, description="alert when 5xx / all requests exceeds this")
    alert_latency_p95_ms: int = Field(2000, ge=1, description="alert when p95 request latency exceeds this")
    alert_duration_seconds: int = Field(300, ge=60, le=86400,
                                        description="how long a condition must hold before it alerts, in whole minutes")

    @field_validator("alert_duration_seconds")
    @classmethod
    def _whole_minutes(cls, v: int | None) -> int | None:
        if v is not None and v % 60:
            raise ValueError(f"alert_duration_seconds must be a multiple of 60 (got {v}): Cloud Monitoring "
                             "evaluates conditions per minute")
        return v

    @field_validator("cpu")
    @classmethod
    def _cpu_choice(cls, v: int) -> int:
        if v not in CPU_CHOICES:
            raise ValueError(f"cpu must be one of {', '.join(map(str, CPU_CHOICES))} (got {v})")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_choice(cls, v: object) -> str:
        memory_gib(v)
        return str(v)

    @model_validator(mode="after")
    def _cloud_run_limits(self) -> Self:
        gib = memory_gib(self.memory)
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) is greater than max_instances "
                             f"({self.max_instances})")
        if self.gpu:  # first: with a GPU, "cpu 2 allows at most 8Gi" would send the user the wrong way
            if self.cpu < GPU_MIN_CPU or gib < GPU_MIN_MEMORY_GIB:
                raise ValueError(f"gpu needs cpu >= {GPU_MIN_CPU} and memory >= {GPU_MIN_MEMORY_GIB}Gi "
                                 f"(got cpu {self.cpu}, memory {self.memory})")
            if self.cpu_idle:
                raise ValueError("gpu needs cpu_idle: false (Cloud Run GPU services use instance-based billing)")
        if gib > MAX_MEMORY_GIB_FOR_CPU[self.cpu]:
            raise ValueError(f"memory {self.memory} needs more vCPU: cpu {self.cpu} allows at most "
                             f"{MAX_MEMORY_GIB_FOR_CPU[self.cpu]}Gi")
        if gib < MIN_MEMORY_GIB_FOR_CPU[self.cpu]:
            raise ValueError(f"cpu {self.cpu} needs at least {MIN_MEMORY_GIB_FOR_CPU[self.cpu]}Gi of memory "
                             f"(got {self.memory})")
        return self

    @property
    def memory_gib(self) -> int:
        return memory_gib(self.memory)


def _override_schema(schema: dict[str, Any]) -> None:
    """An override's JSON schema is EndpointSettings' with every field optional and no defaults: one description
    and one set of allowed values per setting, written once."""
    full = EndpointSettings.model_json_schema()["properties"]
    schema["properties"] = {name: {k: v for k, v in full[name].items() if k != "default"}
                            for name in schema["properties"]}


class SettingsOverride(_Strict):
    """Any subset of EndpointSettings: what a region, a stack or a model changes."""

    model_config = ConfigDict(json_schema_extra=_override_schema)

    cpu: int | None = None
    memory: str | None = None
    gpu: bool | None = None
    gpu_zonal_redundancy: bool | None = None
    min_instances: int | None = Field(None, ge=0)
    max_instances: int | None = Field(None, ge=1, le=MAX_INSTANCES_CAP)
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY)
    timeout_seconds: int | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS)
    cpu_idle: bool | None = None
    startup_cpu_boost: bool | None = None
    public: bool | None = None
    ingress: Ingress | None = None
    execution_environment: Literal["gen1", "gen2"] | None = None
    alert_error_ratio: float | None = Field(None, gt=0, le=1)
    alert_latency_p95_ms: int | None = Field(None, ge=1)
    alert_duration_seconds: int | None = Field(None, ge=60, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _no_empty_values(cls, data: object) -> object:
        """`min_instances:` with no value is a half-finished edit, not "inherit": say so."""
        if isinstance(data, dict):
            empty = [k for k, v in data.items() if v is None]
            if empty:
                raise ValueError(f"{', '.join(map(str, empty))}: empty value; give one, or remove the key to "
                                 "inherit it")
        return data

    @field_validator("cpu")
    @classmethod
    def _cpu_choice(cls, v: int | None) -> int | None:
        return v if v is None else EndpointSettings._cpu_choice(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_choice(cls, v: object) -> str | None:
        return v if v is None else EndpointSettings._memory_choice(v)

    @field_validator("alert_duration_seconds")
    @classmethod
    def _whole_minutes(cls, v: int | None) -> int | None:
        return EndpointSettings._whole_minutes(v)

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


def merge(base: EndpointSettings, *overrides: SettingsOverride) -> EndpointSettings:
    """Apply overrides in order (last wins) and re-check Cloud Run's cross-field limits (components/precedence.py
    orders the layers)."""
    values = base.model_dump()
    for layer in overrides:
        values.update(layer.changes())
    return EndpointSettings.model_validate(values)
