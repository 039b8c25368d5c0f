"""The one cost model: Cloud Run list prices per tier (fleet/prices.yaml) applied to each service's shape.

`fleet cost`, `fleet diff` and the policy pack's monthly-budget check all price services here, so a
price or a formula changes in one place.

Always-on cost is what min_instances costs with no traffic at all: warm instances at the idle rates
(request-based billing) or at the instance rates plus GPUs (instance-based billing). Traffic cost is
an estimate at an assumed request rate and latency per service: each request keeps one instance busy
for `latency` (inference is CPU bound, so requests sharing an instance do not share that time), busy
time is capped by max_instances, and the warm instances of instance-based services absorb traffic first.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.catalog import Catalog, read_yaml
from components.errors import FleetError, describe
from fleet.props import UNKNOWN, cpu_count, dig, known, memory_gib

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
# Cloud Run's defaults when a service leaves a field out.
DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_MAX_INSTANCES = "1", "512Mi", 100


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


class PriceBook(_Strict):
    seconds_per_month: int = Field(gt=0)
    tiers: dict[int, TierPrices] = Field(min_length=1)
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
        raise PriceError(describe(path.name, exc, data, [PriceBook, TierPrices, Price])) from None


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
    """The assumed load on every service: requests per second, and how long each keeps an instance busy."""

    requests_per_second: float = 1.0
    latency_ms: float = 100.0


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
