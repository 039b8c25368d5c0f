"""What runs where: the catalog and stack config joined into named services, before any resource exists.

Settings come in layers, most specific winning, with `forced_settings` over all (components/precedence.py).
A GPU service's max_instances from the catalog is fitted to the stack's GPU quota per region.

Pure data, no Pulumi: resolving every endpoint here first means a bad combination (a GPU in a region
without one, min > max after overrides) stops the run before anything is declared.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pydantic import ValidationError

from components import names
from components.catalog import Catalog, Region
from components.errors import FleetError, describe
from components.precedence import (
    BUILT_IN_LAYER,
    STACK_CHOICES,
    Layer,
    catalog_file_name,
    dedicated_layers,
    origins,
    resolve,
    shared_layers,
)
from components.settings import EndpointSettings
from components.stack_config import ModelSpec, StackConfig

MAX_ENDPOINT_NAME = 49  # what users type and see (`fleet monitor --endpoint`, outputs); Cloud Run's own limit
QUOTA_HOWTO = ("request more in the console (IAM & Admin > Quotas & System Limits, or Google Cloud support if "
               "the console offers no increase) and set yolo-fleet:service_account_quota to the new limit")


@dataclass(frozen=True)
class ServicePlan:
    """One Cloud Run service to declare: a dedicated endpoint (model set) or a shared region (model None).

    `name` is the logical, user-facing name (`demo-iowa`: outputs, `fleet monitor --endpoint`, alert titles);
    `service_name` is the Cloud Run service's physical name (`demo-iowa-prod`), which carries the stack;
    `account_id` is the service account it runs as: its model's, or its shared region's own.
    """

    name: str
    service_name: str
    account_id: str
    region: Region
    settings: EndpointSettings
    model: ModelSpec | None = None
    layers: tuple[Layer, ...] = ()  # where `settings` came from, lowest first (`fleet plan --explain`)

    @property
    def role(self) -> str:
        return "dedicated" if self.model else "shared"

    def origins(self) -> dict[str, Layer]:
        """Setting -> the layer that set its value."""
        return origins(self.layers)


@dataclass(frozen=True)
class FleetLayout:
    endpoints: list[ServicePlan]
    shared: list[ServicePlan]

    @property
    def services(self) -> list[ServicePlan]:
        return self.endpoints + self.shared

    @property
    def model_accounts(self) -> dict[str, str]:
        """Model name -> the service account id its endpoints share (models with at least one endpoint)."""
        return {s.model.name: s.account_id for s in self.endpoints if s.model}

    def by_service_name(self, service_name: str) -> ServicePlan | None:
        """The plan of a Cloud Run service by its physical name, None if the layout has no such service."""
        return next((s for s in self.services if s.service_name == service_name), None)


def _resolve(source: str, where: str, layers: Sequence[Layer]) -> EndpointSettings:
    """The service's settings; FleetError naming the service and, for each setting a line mentions, the layer its
    value came from (a forced memory that cpu 1 cannot hold is not the model's mistake)."""
    try:
        return resolve(layers)
    except ValidationError as exc:
        found = origins(layers)
        lines = []
        for line in describe(f"{source}: {where}", exc, {}, [EndpointSettings]).splitlines():
            named = [n for n in EndpointSettings.model_fields
                     if found[n] is not BUILT_IN_LAYER and re.search(rf"\b{n}\b", line.split(where, 1)[1])]
            lines.append(line + (f" ({'; '.join(f'{n} from {found[n].source}' for n in named)})" if named else ""))
        raise FleetError("\n".join(lines)) from None


def fit_gpu_quota(services: list[ServicePlan], defaulted: set[str], quota: int) -> list[ServicePlan]:
    """GPU services whose max_instances neither the stack nor the model sets (`defaulted`, by name) share what
    the others leave of their region's GPU quota (each instance holds one L4), in plan order, each at most its
    catalog value and at least 1 and its min_instances. A quota that cannot hold them (0 until requested) leaves
    them at that floor, and the `gpu-quota` policy says what to request; a max_instances the stack or a model sets
    is never changed."""
    fitted = list(services)
    regions: dict[str, list[int]] = {}
    for i, s in enumerate(services):
        if s.settings.gpu:
            regions.setdefault(s.region.id, []).append(i)
    for indices in regions.values():
        free = [i for i in indices if services[i].name in defaulted]
        if not free:
            continue
        left = max(quota - sum(services[i].settings.max_instances for i in indices if i not in free), 0)
        for rank, i in enumerate(free):
            share = left // len(free) + (rank < left % len(free))
            settings = services[i].settings
            count = max(1, settings.min_instances, min(settings.max_instances, share))
            fitted[i] = replace(services[i], settings=settings.model_copy(update={"max_instances": count}))
    return fitted


def endpoint_name(model: str, region: Region) -> str:
    return f"{model}-{region.city_slug}"


def plan_fleet(catalog: Catalog, config: StackConfig, source: str, stack: str) -> FleetLayout:
    """Resolve every service's names, region and settings; FleetError names the model/region at fault."""
    known = {r.id for r in catalog.regions}
    catalog_file = catalog_file_name(config)
    endpoints: list[ServicePlan] = []
    defaulted: set[str] = set()  # services whose max_instances comes from the catalog (no stack or model setting)
    for model in config.models:
        if isinstance(model.regions, list):
            unknown = [r for r in model.regions if r not in known]
            if unknown:
                named = [r + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(r, known, n=1))
                         for r in unknown]
                raise FleetError(f"{source}: models[{model.name}].regions: {', '.join(named)} not in the catalog "
                                 f"({catalog_file}); `fleet regions` lists the ids")
        if model.rollout:
            outside = sorted(set(model.rollout.regions) - {r.id for r in catalog.select(model.regions)})
            if outside:
                raise FleetError(f"{source}: models[{model.name}].rollout.regions: {', '.join(outside)} not among "
                                 "the model's regions (a rollout's wave is some of the regions the model runs in)")
        for region in catalog.select(model.regions):
            name = endpoint_name(model.name, region)
            where = f"models[{model.name}] in regions[{region.id}]"
            if len(name) > MAX_ENDPOINT_NAME:
                raise FleetError(f"{source}: {where}: endpoint name '{name}' is longer than {MAX_ENDPOINT_NAME} "
                                 "characters; use a shorter model name")
            layers = dedicated_layers(catalog, config, region, model, catalog_file, source)
            settings = _resolve(source, where, layers)
            if origins(layers)["max_instances"].kind not in STACK_CHOICES:
                defaulted.add(name)
            if settings.gpu and not region.gpu_available:
                raise FleetError(f"{source}: {where}: gpu: {region.id} has no GPU; choose a region with "
                                 "gpu_available or drop gpu")
            endpoints.append(ServicePlan(name, names.cloud_run_service(name, stack),
                                         names.service_account_id(model.name, stack), region, settings, model,
                                         layers))
    shared = []
    layers = shared_layers(catalog, config, catalog_file, source)
    for region_id in catalog.shared.regions:
        region = catalog.region(region_id)
        if not region.enabled:
            continue
        settings = _resolve(source, f"shared in regions[{region.id}]", layers)
        name = f"shared-{region.city_slug}"
        if origins(layers)["max_instances"].kind not in STACK_CHOICES:
            defaulted.add(name)
        if settings.gpu and not region.gpu_available:
            raise FleetError(f"{source}: shared in regions[{region.id}]: gpu: {region.id} has no GPU")
        shared.append(ServicePlan(name, names.cloud_run_service(name, stack), names.service_account_id(name, stack),
                                  region, settings, layers=layers))
    fitted = fit_gpu_quota(endpoints + shared, defaulted, config.gpu_quota_per_region)
    layout = FleetLayout(fitted[:len(endpoints)], fitted[len(endpoints):])
    _check_unique(layout, source)
    _check_account_quota(layout, config, source)
    return layout


def _check_unique(layout: FleetLayout, source: str) -> None:
    """No two services share a name, and no model's account is a shared region's (a model named 'shared-iowa')."""
    for what, values in (("named", [s.name for s in layout.services]),
                         ("deployed as Cloud Run service", [s.service_name for s in layout.services])):
        clashes = sorted({n for n in values if values.count(n) > 1})
        if clashes:
            raise FleetError(f"{source}: two services would both be {what} {', '.join(clashes)}; rename a model")
    owners: dict[str, set[str]] = {}
    for s in layout.services:
        owners.setdefault(s.account_id, set()).add(f"model {s.model.name}" if s.model else s.name)
    for account, who in sorted(owners.items()):
        if len(who) > 1:
            raise FleetError(f"{source}: {' and '.join(sorted(who))} would share service account {account}; "
                             "rename the model")


def _check_account_quota(layout: FleetLayout, config: StackConfig, source: str) -> None:
    """One account per model and per shared region must fit the project's service account quota."""
    models = len(layout.model_accounts)
    needed = models + len(layout.shared)
    if needed > config.service_account_quota:
        raise FleetError(
            f"{source}: the stack needs {needed} service accounts ({models} for its models, one each, and "
            f"{len(layout.shared)} for the shared regions) but the project's quota is {config.service_account_quota} "
            f"(IAM, iam.googleapis.com: service accounts per project, default 100, shared with everything else in "
            f"the project); deploy fewer models, or {QUOTA_HOWTO}")
