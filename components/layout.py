"""What runs where: the catalog and stack config joined into named services, before any resource exists.

Settings precedence, last wins: catalog `defaults` < the region's `overrides` (or the catalog's `shared`
settings) < the stack's `settings` < the model's `settings` (or the stack's `shared_settings`).

Pure data, no Pulumi: resolving every endpoint here first means a bad combination (a GPU in a region
without one, min > max after overrides) stops the run before anything is declared.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from components.catalog import Catalog, Region
from components.errors import FleetError, describe
from components.settings import EndpointSettings, merge
from components.stack_config import ModelSpec, StackConfig

MAX_SERVICE_NAME = 49  # Cloud Run service names: lowercase, digits, '-', at most 49 characters


@dataclass(frozen=True)
class ServicePlan:
    """One Cloud Run service to declare: a dedicated endpoint (model set) or a shared region (model None)."""

    name: str
    region: Region
    settings: EndpointSettings
    model: ModelSpec | None = None

    @property
    def role(self) -> str:
        return "dedicated" if self.model else "shared"


@dataclass(frozen=True)
class FleetLayout:
    endpoints: list[ServicePlan]
    shared: list[ServicePlan]

    @property
    def services(self) -> list[ServicePlan]:
        return self.endpoints + self.shared


def _resolve(source: str, where: str, *layers: object) -> EndpointSettings:
    base, *overrides = layers
    try:
        return merge(base, *overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise FleetError(describe(f"{source}: {where}", exc, {}, [EndpointSettings])) from None


def endpoint_name(model: str, region: Region) -> str:
    return f"{model}-{region.city_slug}"


def plan_fleet(catalog: Catalog, config: StackConfig, source: str) -> FleetLayout:
    """Resolve every service's name, region and settings; FleetError names the model/region at fault."""
    known = {r.id for r in catalog.regions}
    endpoints: list[ServicePlan] = []
    for model in config.models:
        if isinstance(model.regions, list):
            unknown = [r for r in model.regions if r not in known]
            if unknown:
                raise FleetError(f"{source}: models[{model.name}].regions: {', '.join(unknown)} not in the "
                                 f"catalog ({config.catalog}); `fleet regions` lists the ids")
        for region in catalog.select(model.regions):
            name = endpoint_name(model.name, region)
            where = f"models[{model.name}] in regions[{region.id}]"
            if len(name) > MAX_SERVICE_NAME:
                raise FleetError(f"{source}: {where}: endpoint name '{name}' is longer than {MAX_SERVICE_NAME} "
                                 "characters; use a shorter model name")
            settings = _resolve(source, where, catalog.defaults, region.overrides, config.settings, model.settings)
            if settings.gpu and not region.gpu_available:
                raise FleetError(f"{source}: {where}: gpu: {region.id} has no GPU; choose a region with "
                                 "gpu_available or drop gpu")
            endpoints.append(ServicePlan(name, region, settings, model))
    shared = []
    for region_id in catalog.shared.regions:
        region = catalog.region(region_id)
        if not region.enabled:
            continue
        settings = _resolve(source, f"shared in regions[{region.id}]", catalog.defaults, catalog.shared.settings,
                            config.settings, config.shared_settings)
        if settings.gpu and not region.gpu_available:
            raise FleetError(f"{source}: shared in regions[{region.id}]: gpu: {region.id} has no GPU")
        shared.append(ServicePlan(f"shared-{region.city_slug}", region, settings))
    names = [s.name for s in endpoints + shared]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise FleetError(f"{source}: two services would both be named {', '.join(clashes)}; rename a model")
    return FleetLayout(endpoints, shared)
