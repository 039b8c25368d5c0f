"""Stack configuration (`Pulumi.<stack>.yaml`): what to deploy, validated like the catalog.

Keys live in the `yolo-fleet:` namespace (snake_case, as in the catalog) plus `gcp:project`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from typing import Annotated, Any, Literal

import pulumi
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.catalog import GEOGRAPHIES
from components.errors import FleetError, describe
from components.settings import MAX_INSTANCES_CAP, EndpointSettings, SettingsOverride

NAMESPACE = "yolo-fleet"
PLACEHOLDER_PROJECT = "my-gcp-project"
# Tenant owners become URL path segments and model directories: GitHub-style names, nothing else.
OWNER = re.compile(r"^[a-z0-9](?:-?[a-z0-9]){0,38}$")
MAX_OWNER = 39
# The IAM quota on service accounts per project, and Cloud Run's L4 GPU quota per region: a new project has
# none until requested (cloud.google.com/run/docs/configuring/services/gpu, "Request quota").
DEFAULT_SERVICE_ACCOUNT_QUOTA = 100
DEFAULT_GPU_QUOTA_PER_REGION = 0
DOMAIN = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
PROJECT_ID = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"  # Google Cloud's rule for project ids
PROJECT_ID_RULE = "a Google Cloud project id (6-30 lowercase letters, digits and hyphens, starting with a letter)"


def _matching(pattern: str, what: str) -> AfterValidator:
    """A string `pattern` matches whole; otherwise the rule in words, not the regular expression."""
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    return AfterValidator(check)


ProjectId = Annotated[str, _matching(PROJECT_ID, PROJECT_ID_RULE)]
DomainName = Annotated[str, Field(max_length=200), _matching(
    DOMAIN, "a domain name: lowercase labels joined by dots, with no scheme, port or path (e.g. "
            "inference.your-company.com)")]
ImageByDigest = Annotated[str, _matching(r"\S+@sha256:[0-9a-f]{64}", "an image by digest: "
                                         "REPOSITORY@sha256:<64 hex digits>, as its registry reports it")]
ModelName = Annotated[str, _matching(r"[a-z][a-z0-9-]{0,22}[a-z0-9]|[a-z]", "a model name: 1-24 lowercase letters, "
                                     "digits and '-', starting with a letter, not ending with '-' (it begins the "
                                     "names of its endpoints)")]


class ConfigError(FleetError):
    """The stack configuration is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolloutSpec(_Strict):
    """A model file being rolled out (`fleet rollout` writes it): the regions of the current wave run both files,
    `to` at `percent` under the `canary` tag; the model's other regions keep `file` alone."""

    to: str = Field(description="the new ONNX file in this repository, baked into the image beside `file`")
    percent: int = Field(0, ge=0, le=100, description="the share of the wave's requests `to` serves")
    regions: list[str] = Field(default_factory=list, description="region ids of the current wave, all among the "
                                                                 "model's regions; empty stages the file only")
    bake_minutes: float = Field(10, ge=0, description="how long each wave runs before its metrics are judged "
                                                       "(`fleet rollout --bake`; the rollout-bake policy's minimum)")

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("regions: a region is given twice")
        return v


REGION_SETS = ("all", *GEOGRAPHIES)  # what a model's `regions` may name instead of a list of ids


class ModelSpec(_Strict):
    """One model of the stack and where its dedicated endpoints run."""

    name: ModelName = Field(description="lowercase letters, digits, '-'; the first part of endpoint names")
    file: str = Field("models/demo-e2e.onnx", description="ONNX file in this repository, baked into the image")
    regions: Literal["all", "americas", "europe", "asia-pacific", "middle-east", "africa"] | list[str] = "all"
    settings: SettingsOverride = Field(SettingsOverride(), description="this model's endpoints' settings: over "
                                                                         "their regions' overrides")
    rollout: RolloutSpec | None = Field(None, description="a new file rolling out (`fleet rollout`)")

    @model_validator(mode="after")
    def _new_file(self) -> ModelSpec:
        if self.rollout and self.rollout.to == self.file:
            raise ValueError(f"rollout.to: '{self.file}' is already the model's file; roll out another file")
        return self

    @field_validator("regions", mode="before")
    @classmethod
    def _a_known_set(cls, v: Any) -> Any:
        """One line for a misspelt set, not one per branch of the union (a name, then 'a valid list')."""
        if isinstance(v, str) and v not in REGION_SETS:
            if any(c.isdigit() for c in v):  # a region id: 'europe-west1' must not be steered to all of europe
                raise ValueError(f"'{v}' is neither 'all' nor a geography; one region is a list: [{v}]")
            close = difflib.get_close_matches(v, REGION_SETS, n=1)
            raise ValueError(f"'{v}' is neither 'all' nor a geography ({', '.join(GEOGRAPHIES)}); a list names "
                             "region ids" + (f"; did you mean '{close[0]}'?" if close else ""))
        return v

    @field_validator("regions")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("regions: an empty list deploys nothing; use 'all', a geography or region ids")
        return v


def check_digests(digests: list[str]) -> list[str]:
    """The digests as the server compares them (lowercase hex); `sha256sum`'s own line (`<hex>  -`) and uppercase
    hex are the digest as pasted, not a mistake."""
    found = []
    for i, given in enumerate(digests):
        digest = given.strip().removesuffix("  -").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):  # not echoed: it may be the key itself, headed for CI logs
            raise ValueError(f"entry {i} ({len(given)} characters) is not a sha256 hex digest (64 hex characters); "
                             "store the digest of the key, never the key itself: printf %s \"$KEY\" | sha256sum "
                             "| cut -d' ' -f1")
        found.append(digest)
    return found


class TenantSpec(_Strict):
    """One tenant of the shared API: where its models live (and never leave) and its API key digests."""

    data_region: str = Field(description="one of the catalog's shared regions; requests are routed there")
    key_sha256: list[str] = Field(min_length=1, description="sha256 hex digests of the tenant's API keys")

    @field_validator("key_sha256")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        return check_digests(v)


class NotificationChannelSpec(_Strict):
    """Where alerts go: any Cloud Monitoring channel type, with the labels that type needs."""

    type: Literal["email", "slack", "pagerduty", "sms", "webhook_tokenauth", "pubsub", "google_chat"]
    display_name: str = Field(min_length=1, max_length=100)
    labels: dict[str, str] = Field(description="e.g. {email_address: oncall@example.com}")

    @model_validator(mode="after")
    def _required_label(self) -> NotificationChannelSpec:
        needed = {"email": "email_address", "sms": "number", "slack": "channel_name", "pubsub": "topic",
                  "webhook_tokenauth": "url", "pagerduty": "service_key", "google_chat": "space"}[self.type]
        if needed not in self.labels:
            raise ValueError(f"labels: a {self.type} channel needs '{needed}'")
        return self


class SloSpec(_Strict):
    """Per-endpoint service level objectives (off unless enabled)."""

    enabled: bool = False
    availability_goal: float = Field(0.995, gt=0, lt=1, description="share of requests that are not 5xx")
    latency_goal: float = Field(0.95, gt=0, lt=1, description="share of requests faster than latency_ms")
    latency_ms: int = Field(1000, ge=1)
    rolling_period_days: int = Field(28, ge=1, le=30)


# Cloud Armor's rate-based rules count over one of these intervals (and ban for one of these durations), seconds.
ARMOR_INTERVALS = (10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600)


class RateLimitSpec(_Strict):
    """Cloud Armor's per-client limit on every backend of the balancer: each client IP may send `requests`
    per `interval_seconds`; beyond that it gets 429 (throttle), or is refused for `ban_seconds` (ban)."""

    requests: int = Field(600, ge=1, le=1_000_000, description="requests per client IP per interval")
    interval_seconds: int = Field(60, description="the counting window; one of Cloud Armor's intervals")
    action: Literal["throttle", "ban"] = Field("throttle", description="throttle: 429 beyond the limit; "
                                               "ban: 429 for ban_seconds once over it")
    ban_seconds: int = Field(600, description="how long a banned client is refused (action ban)")
    preview: bool = Field(False, description="log what the rule would do without enforcing it (a first rollout)")

    @field_validator("interval_seconds", "ban_seconds")
    @classmethod
    def _armor_interval(cls, v: int) -> int:
        if v not in ARMOR_INTERVALS:
            raise ValueError(f"{v} is not a Cloud Armor interval; use one of {', '.join(map(str, ARMOR_INTERVALS))}")
        return v


class TlsSpec(_Strict):
    """The balancer's SSL policy: the oldest TLS version and the cipher profile its HTTPS proxy accepts."""

    min_tls_version: Literal["TLS_1_2", "TLS_1_3"] = "TLS_1_2"
    profile: Literal["MODERN", "RESTRICTED"] = "MODERN"


class StackConfig(_Strict):
    project: ProjectId = Field(description="gcp:project")
    catalog: str = "regions.yaml"
    models: list[ModelSpec] = Field(default_factory=list)
    settings: SettingsOverride = Field(
        SettingsOverride(), description="the stack's defaults for every service: over the catalog's defaults, under "
                                        "a region's overrides, a model's settings and the shared services' settings")
    shared_settings: SettingsOverride = Field(
        SettingsOverride(), description="the shared services' settings: over the catalog's shared.settings")
    forced_settings: SettingsOverride = Field(
        SettingsOverride(), description="forced on every service of the stack, over every other layer (a region's "
                                        "overrides included)")
    api_key_sha256: list[str] = Field(min_length=1, description="sha256 hex digests of the API keys (never keys)")
    image: ImageByDigest | None = Field(None, description="a prebuilt server image by digest; unset builds "
                                                          "inference_service/")
    gpu_image: ImageByDigest | None = Field(None,
                                  description="a prebuilt GPU server image (RUNTIME=gpu) by digest, for GPU services; "
                                              "unset builds it when a service asks for a GPU")
    deletion_protection: bool = True
    tenants: dict[str, TenantSpec] = Field(default_factory=dict, description="shared API tenants by owner name")
    shared_domain: DomainName | None = Field(None,
                                      description="the shared API's domain; us., eu., ap. hosts under it")
    domain: DomainName | None = Field(None,
                               description="one global balancer: <model>.<domain>, <endpoint>.<domain>; unset: none "
                                           "for the dedicated endpoints")
    tls: TlsSpec = TlsSpec()
    rate_limit: RateLimitSpec = RateLimitSpec()
    # Read by the policy pack (policy/), not by the program: limits a pull request is checked against.
    max_instances_cap: int | None = Field(None, ge=1, le=MAX_INSTANCES_CAP,
                                          description="no service of the stack may set max_instances above this")
    monthly_budget_usd: float | None = Field(None, gt=0, description="always-on (min_instances) cost limit, USD/month")
    service_account_quota: int = Field(
        DEFAULT_SERVICE_ACCOUNT_QUOTA, ge=1,
        description="the project's service account quota (IAM default 100): the plan stops if the stack needs more")
    gpu_quota_per_region: int = Field(
        DEFAULT_GPU_QUOTA_PER_REGION, ge=0,
        description="policy: Cloud Run L4 GPUs the project may run per region (quota 'Total Nvidia L4 GPU "
                    "allocation, per project per region', 0 until requested); GPU services' max_instances sum")
    notification_channels: list[NotificationChannelSpec] = Field(default_factory=list,
                                                                 description="where alerts are sent; none required")
    slo: SloSpec = SloSpec()

    @field_validator("api_key_sha256")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        return check_digests(v)

    @field_validator("tenants", mode="before")
    @classmethod
    def _owner_names(cls, v: object) -> object:
        for owner in v if isinstance(v, dict) else ():
            if not isinstance(owner, str) or len(owner) > MAX_OWNER or not OWNER.match(owner):
                raise ValueError(f"tenant '{str(owner)[:80]}': owner names are URL path segments and model "
                                 f"directories: 1-{MAX_OWNER} lowercase letters, digits and single inner '-' "
                                 "(no '..', '/', '_' or other characters)")
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique: {', '.join(dupes)} given twice")
        return v


def parse_stack_config(raw: dict[str, Any], source: str) -> StackConfig:
    """Validate config values (as Pulumi stores them: strings, JSON for objects) into a StackConfig."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a plain string stays a string
                value = json.loads(value)
        data[key] = value
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(source, exc, data, [StackConfig, ModelSpec, RolloutSpec, TenantSpec,
                                                      EndpointSettings, NotificationChannelSpec, SloSpec,
                                                      RateLimitSpec, TlsSpec])) from None


def stack_config_from_values(all_config: dict[str, Any], stack: str) -> StackConfig:
    """Validate a stack's config as Pulumi hands it over ('yolo-fleet:models', 'gcp:project', ...)."""
    prefix = f"{NAMESPACE}:"
    raw = {k.removeprefix(prefix): v for k, v in all_config.items() if k.startswith(prefix)}
    if all_config.get("gcp:project") is not None:
        raw["project"] = all_config["gcp:project"]
    return parse_stack_config(raw, f"Pulumi.{stack}.yaml")


def load_stack_config() -> StackConfig:
    """Read this stack's config through Pulumi (works for `pulumi up` and under mocks alike)."""
    all_config: dict[str, Any] = pulumi.runtime.config.CONFIG.get() or pulumi.runtime.config.get_config_env()
    return stack_config_from_values(all_config, pulumi.get_stack())
