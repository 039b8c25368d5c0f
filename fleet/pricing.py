"""The one cost model: list prices (fleet/prices.yaml) applied to each Cloud Run service's shape and to the
stack-wide resources the plan holds (load balancer, image repositories, secrets).

`fleet cost`, `fleet diff` and the policy pack's monthly-budget check all price services here, so a
price or a formula changes in one place.

Always-on cost is what min_instances costs with no traffic at all: warm instances at the idle rates
(request-based billing) or at the instance rates plus GPUs (instance-based billing). Traffic cost is
an estimate at an assumed request rate and latency per service: each request keeps one instance busy
for `latency` (inference is CPU bound, so requests sharing an instance do not share that time), busy
time is capped by max_instances, and the warm instances of instance-based services absorb traffic first.

Stack-wide ("platform") costs come from the plan's resources, never from config, so a stack without a
balancer pays for none: forwarding rules and stored images and active secret versions are always-on;
data the balancer processes and secret reads scale with the assumed traffic.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.catalog import Catalog, read_yaml
from components.errors import FleetError, describe
from fleet.props import UNKNOWN, cpu_count, dig, known, memory_gib
from inference_service.recheck import RECHECK_SECONDS

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
# Cloud Run's defaults when a service leaves a field out.
DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_MAX_INSTANCES = "1", "512Mi", 100
# The server image's size in a repository, GB: an upper bound. benchmarks/RESULTS.md (`image`) measured
# 0.42 GB uncompressed on a stand-in base (0.25 GB; the real python:3.11-slim-bookworm is ~0.125 GB, so
# ~0.30 GB uncompressed for real); a registry stores compressed layers, smaller still.
IMAGE_SIZE_GB = 0.4
# The GPU variant (RUNTIME=gpu), when a service asks for a GPU: the same plus onnxruntime-gpu and the CUDA 12 /
# cuDNN wheels, 1.98 GB compressed as PyPI serves them (inference_service/requirements-gpu.txt); an estimate, the
# image was not built here.
GPU_IMAGE_SIZE_GB = 2.4
IMAGE = "docker-build:index:Image"
GIB = 1024**3
KIB = 1024
# Resource types the platform costs are read from.
FORWARDING_RULE = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
SERVERLESS_NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECURITY_POLICY = "gcp:compute/securityPolicy:SecurityPolicy"
CLOUD_RUN_SERVICE = "gcp:cloudrunv2/service:Service"


class PriceError(FleetError):
    """The price file is unreadable, invalid, or has no price for a region's tier."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    usd: float = Field(ge=0)
    source: str = Field(min_length=1, description="where the price was read")
    date: datetime.date = Field(description="when it was read there")


class TierPrices(_Strict):
    request_vcpu_second: Price
    request_gib_second: Price
    idle_vcpu_second: Price
    idle_gib_second: Price
    million_requests: Price
    instance_vcpu_second: Price
    instance_gib_second: Price
    gpu_l4_second: Price
    gpu_l4_zonal_redundant_second: Price


class PlatformPrices(_Strict):
    """Stack-wide prices, the same in every region the fleet uses."""

    forwarding_rules_first_5_hour: Price  # one charge for the first 5 global forwarding rules together
    forwarding_rule_additional_hour: Price  # each rule beyond 5
    lb_inbound_gib: Price  # data processed by the balancer: requests in
    lb_outbound_gib: Price  # and responses out
    armor_policy_month: Price  # a Cloud Armor security policy
    armor_rule_month: Price  # each of its rules
    armor_million_requests: Price  # requests the policies evaluate
    registry_storage_gb_month: Price
    secret_version_location_month: Price  # an active secret version, per replica location
    secret_access_10k: Price  # 10,000 access operations


class PriceBook(_Strict):
    seconds_per_month: int = Field(gt=0)
    tiers: dict[int, TierPrices] = Field(min_length=1)
    platform: PlatformPrices
    path: str = ""

    def for_region(self, region: str, tier: int) -> TierPrices:
        if tier not in self.tiers:
            raise PriceError(f"{self.path}: no prices for pricing tier {tier}, which region {region} is in; add a "
                             f"'{tier}:' entry under tiers (from https://cloud.google.com/run/pricing)")
        return self.tiers[tier]


def load_prices(path: str | Path = DEFAULT_PRICES) -> PriceBook:
    path = Path(path)
    data = read_yaml(path, PriceError)
    if not isinstance(data, dict):
        raise PriceError(f"{path}: expected a mapping with seconds_per_month and tiers")
    try:
        return PriceBook.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise PriceError(describe(path.name, exc, data, [PriceBook, TierPrices, PlatformPrices, Price])) from None


@dataclass(frozen=True)
class ServiceShape:
    """What Cloud Run bills for one service, read from its provider inputs."""

    name: str
    region: str
    model: str  # the `model` label, 'shared' for the shared services
    cpu: float
    memory_gib: float
    gpus: int
    min_instances: int
    max_instances: int
    request_based: bool  # cpu_idle true: CPU (and the bill) only while serving requests
    gpu_zonal_redundancy: bool


def service_shape(name: str, props: Any) -> ServiceShape | None:
    """The shape of a Cloud Run service from its camelCase inputs; None while a value is unknown (preview)."""
    resources = dig(props, "template", "containers", 0, "resources")
    limits = dig(resources, "limits") or {}
    values = [dig(props, "location"), dig(props, "name"), dig(limits, "cpu"), dig(limits, "memory"),
              dig(limits, "nvidia.com/gpu"), dig(resources, "cpuIdle"),
              dig(props, "template", "scaling", "minInstanceCount"),
              dig(props, "template", "scaling", "maxInstanceCount"),
              dig(props, "template", "gpuZonalRedundancyDisabled"), dig(props, "labels")]
    if resources is UNKNOWN or limits is UNKNOWN or not known(*values):
        return None
    location, service_name, cpu, memory, gpus, cpu_idle, min_count, max_count, redundancy_off, labels = values
    labels = labels or {}
    model = dig(labels, "model") or ("shared" if dig(labels, "role") == "shared" else "-")
    return ServiceShape(
        name=str(service_name or name), region=str(location), model=str(model),
        cpu=cpu_count(cpu or DEFAULT_CPU) or 0.0, memory_gib=memory_gib(memory or DEFAULT_MEMORY) or 0.0,
        gpus=int(float(gpus or 0)), min_instances=int(min_count or 0),
        max_instances=int(max_count or DEFAULT_MAX_INSTANCES), request_based=cpu_idle is not False,
        gpu_zonal_redundancy=bool(gpus) and not redundancy_off)


@dataclass(frozen=True)
class Traffic:
    """The assumed load on every service: requests per second, how long each keeps an instance busy, its size
    through the balancer, and how many secret reads it causes."""

    requests_per_second: float = 1.0
    latency_ms: float = 100.0
    request_kib: float = 100.0  # a JPEG sent for inference
    response_kib: float = 2.0  # the detections as JSON
    # Cloud Run "always fetches the secret value from Secret Manager" when a secret volume is read
    # (https://cloud.google.com/run/docs/configuring/services/secrets); the server looks at each mounted
    # file at most once per SECRETS_RECHECK_SECONDS while requests arrive (inference_service/recheck.py).
    secrets_recheck_seconds: float = RECHECK_SECONDS


@dataclass(frozen=True)
class ServiceCost:
    shape: ServiceShape
    tier: int
    geography: str
    always_on: float  # USD per month
    traffic: float  # USD per month at the assumed traffic
    capped: bool  # the assumed traffic needs more instances than max_instances allows

    @property
    def total(self) -> float:
        return self.always_on + self.traffic


def _instance_rate(shape: ServiceShape, p: TierPrices) -> float:
    gpu = p.gpu_l4_zonal_redundant_second if shape.gpu_zonal_redundancy else p.gpu_l4_second
    return shape.cpu * p.instance_vcpu_second.usd + shape.memory_gib * p.instance_gib_second.usd + shape.gpus * gpu.usd


def always_on_monthly(shape: ServiceShape, p: TierPrices, seconds: float) -> float:
    """min_instances kept warm for a month with no traffic."""
    if shape.request_based:
        rate = shape.cpu * p.idle_vcpu_second.usd + shape.memory_gib * p.idle_gib_second.usd
    else:
        rate = _instance_rate(shape, p)
    return shape.min_instances * rate * seconds


def traffic_monthly(shape: ServiceShape, p: TierPrices, traffic: Traffic, seconds: float) -> tuple[float, bool]:
    """(USD per month serving `traffic`, whether max_instances caps it) on top of the always-on cost."""
    requests = traffic.requests_per_second * seconds
    busy = requests * traffic.latency_ms / 1000  # instance-seconds
    capacity = shape.max_instances * seconds
    capped = busy > capacity
    busy = min(busy, capacity)
    if shape.request_based:
        active = shape.cpu * p.request_vcpu_second.usd + shape.memory_gib * p.request_gib_second.usd
        return busy * active + requests / 1e6 * p.million_requests.usd, capped
    extra = max(0.0, busy - shape.min_instances * seconds)  # warm instances serve first, already paid for
    return extra * _instance_rate(shape, p), capped


def price_services(shapes: Iterable[ServiceShape], catalog: Catalog, book: PriceBook,
                   traffic: Traffic = Traffic()) -> list[ServiceCost]:
    """Price each service by its region's tier; PriceError if a region is unknown or its tier unpriced."""
    regions = {r.id: r for r in catalog.regions}
    costs = []
    for shape in shapes:
        region = regions.get(shape.region)
        if region is None:
            raise PriceError(f"{shape.name}: region {shape.region} is not in the catalog, so its pricing tier "
                             "is unknown")
        prices = book.for_region(region.id, region.tier)
        seconds = book.seconds_per_month
        cost, capped = traffic_monthly(shape, prices, traffic, seconds)
        costs.append(ServiceCost(shape, region.tier, region.geography, always_on_monthly(shape, prices, seconds),
                                 cost, capped))
    return costs


@dataclass(frozen=True)
class PlatformShape:
    """The stack-wide resources a plan bills for, counted from its resources."""

    forwarding_rules: int = 0
    balanced_services: int = 0  # Cloud Run services behind the balancer (one serverless NEG each)
    repositories: int = 0
    secret_version_locations: int = 0  # active secret versions x the locations each secret is replicated to
    secret_mounts: int = 0  # secret volumes across the Cloud Run services
    gpu_image: bool = False  # the plan builds the GPU variant too, stored in every repository beside the CPU one
    security_policies: int = 0  # Cloud Armor policies; every request through the balancer is evaluated once
    security_rules: int = 0


def _is_list(value: Any) -> bool:
    """A list input, or the policy pack's proxy of one (a Sequence, not a list), so both count alike."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def _replicas(props: Any) -> int:
    """Locations a secret is billed in: automatic replication counts as one."""
    replicas = dig(props, "replication", "userManaged", "replicas")
    return len(replicas) if _is_list(replicas) and replicas else 1


def platform_shape(resources: Iterable[tuple[str, str, Any]]) -> PlatformShape:
    """Count (type, name, props) resources. A version is billed in its secret's locations, found by the
    secret's id (`projects/<project>/secrets/<secret_id>`); one whose secret is not found (offline, or unknown
    during a preview) counts one location, as automatic replication does."""
    items = list(resources)
    secrets: dict[str, int] = {}
    for typ, _, props in items:
        secret_id = dig(props, "secretId")
        if typ == SECRET and isinstance(secret_id, str):
            secrets[f"projects/{dig(props, 'project')}/secrets/{secret_id}"] = _replicas(props)
    count = {typ: 0 for typ in (FORWARDING_RULE, SERVERLESS_NEG, REPOSITORY)}
    versions = mounts = policies = rules = 0
    gpu_image = False
    for typ, _, props in items:
        if typ in count:
            count[typ] += 1
        elif typ == IMAGE:
            gpu_image = gpu_image or dig(props, "buildArgs", "RUNTIME") == "gpu"
        elif typ == SECURITY_POLICY:
            policies += 1
            listed = dig(props, "rules")
            rules += len(listed) if _is_list(listed) else 1
        elif typ == SECRET_VERSION:
            secret = dig(props, "secret")
            versions += secrets.get(secret, 1)
        elif typ == CLOUD_RUN_SERVICE:
            volumes = dig(props, "template", "volumes")
            mounts += sum(1 for v in volumes if dig(v, "secret")) if _is_list(volumes) else 0
    return PlatformShape(count[FORWARDING_RULE], count[SERVERLESS_NEG], count[REPOSITORY], versions, mounts, gpu_image,
                         policies, rules)


@dataclass(frozen=True)
class PlatformCost:
    """One stack-wide line of the bill, USD per month."""

    item: str
    quantity: str  # what was counted or assumed, for the reader
    always_on: float = 0.0
    traffic: float = 0.0

    @property
    def total(self) -> float:
        return self.always_on + self.traffic


def price_platform(shape: PlatformShape, book: PriceBook, traffic: Traffic = Traffic()) -> list[PlatformCost]:
    """The lines that apply to this plan (none for resources it lacks)."""
    p, seconds = book.platform, book.seconds_per_month
    hours = seconds / 3600
    requests = traffic.requests_per_second * seconds  # per service
    lines = []
    if shape.forwarding_rules:
        extra = max(0, shape.forwarding_rules - 5)
        lines.append(PlatformCost(
            "load balancer forwarding rules", f"{shape.forwarding_rules} rule(s), {hours:g} h",
            always_on=hours * (p.forwarding_rules_first_5_hour.usd + extra * p.forwarding_rule_additional_hour.usd)))
    if shape.balanced_services:
        inbound = shape.balanced_services * requests * traffic.request_kib * KIB / GIB
        outbound = shape.balanced_services * requests * traffic.response_kib * KIB / GIB
        lines.append(PlatformCost(
            "load balancer data processed", f"{inbound:,.1f} GiB in, {outbound:,.1f} GiB out "
            f"({shape.balanced_services} service(s))",
            traffic=inbound * p.lb_inbound_gib.usd + outbound * p.lb_outbound_gib.usd))
    if shape.security_policies:
        evaluated = shape.balanced_services * requests
        lines.append(PlatformCost(
            "Cloud Armor", f"{shape.security_policies} policy, {shape.security_rules} rules, "
            f"{evaluated / 1e6:,.1f}M requests evaluated",
            always_on=(shape.security_policies * p.armor_policy_month.usd
                       + shape.security_rules * p.armor_rule_month.usd),
            traffic=evaluated / 1e6 * p.armor_million_requests.usd))
    if shape.repositories:
        size = IMAGE_SIZE_GB + (GPU_IMAGE_SIZE_GB if shape.gpu_image else 0)
        what = f"{IMAGE_SIZE_GB:g} GB image" + (f" + {GPU_IMAGE_SIZE_GB:g} GB GPU image" if shape.gpu_image else "")
        lines.append(PlatformCost(
            "Artifact Registry storage", f"{shape.repositories} repositories x {what}",
            always_on=shape.repositories * size * p.registry_storage_gb_month.usd))
    if shape.secret_version_locations:
        lines.append(PlatformCost(
            "Secret Manager versions", f"{shape.secret_version_locations} active version-location(s)",
            always_on=shape.secret_version_locations * p.secret_version_location_month.usd))
    if shape.secret_mounts:
        # Per mounted secret: a look per request, but at most one per re-check interval (one instance serving
        # the assumed traffic all month; each further instance looks on its own clock).
        looks = requests if traffic.secrets_recheck_seconds == 0 else min(
            requests, seconds / traffic.secrets_recheck_seconds)
        reads = shape.secret_mounts * looks
        lines.append(PlatformCost(
            "Secret Manager access operations", f"{reads:,.0f} reads ({shape.secret_mounts} mounted secret(s), "
            f"at most one per {traffic.secrets_recheck_seconds:g} s while serving)",
            traffic=reads / 10_000 * p.secret_access_10k.usd))
    return lines


# What a total includes and leaves out, said beside every total (`fleet cost`, `fleet diff`).
COVERS = ("Cloud Run (always-on and traffic)", "load balancer forwarding rules and data processed",
          "Cloud Armor policies, rules and requests",
          "Artifact Registry image storage", "Secret Manager versions and access operations")
EXCLUDES = ("internet and cross-region egress", "Cloud Logging (incl. Data Access audit logs) and Cloud Monitoring "
            "beyond their free allotments", "Cloud Storage for tenant models", "older image versions kept by "
            "the cleanup policies", "free tiers (not subtracted)")

