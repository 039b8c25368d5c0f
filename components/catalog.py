"""The region catalog (`regions.yaml`): which Cloud Run regions exist, their facts, and per-region settings.

Loading validates everything up front so that a typo is one clear line naming the file, the entry and
the field, and no resource is declared from a half-valid catalog.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from components.errors import FleetError, describe, file_label
from components.settings import EndpointSettings, SettingsOverride, merge

# Cloud Run regions and those offering nvidia-l4 GPUs (Google Cloud "Cloud Run locations" and
# "GPU support for services" pages, as of 2026; see shared/reference/regions.md).
CLOUD_RUN_REGIONS = frozenset({
    "us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1", "us-west2", "us-west3",
    "us-west4", "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1",
    "southamerica-east1", "southamerica-west1", "europe-central2", "europe-north1", "europe-north2",
    "europe-southwest1", "europe-west1", "europe-west2", "europe-west3", "europe-west4", "europe-west6",
    "europe-west8", "europe-west9", "europe-west10", "europe-west12", "asia-east1", "asia-east2",
    "asia-northeast1", "asia-northeast2", "asia-northeast3", "asia-south1", "asia-south2", "asia-southeast1",
    "asia-southeast2", "asia-southeast3", "australia-southeast1", "australia-southeast2", "me-central1",
    "me-central2", "me-west1", "africa-south1",
})
# The same ids as JSON values, for the schema editors check regions.yaml against (fleet/docs.py).
REGION_IDS: list[JsonValue] = [*sorted(CLOUD_RUN_REGIONS)]
L4_GPU_REGIONS = frozenset({"us-central1", "us-east4", "europe-west1", "europe-west4", "asia-south1",
                            "asia-southeast1"})

Geography = Literal["americas", "europe", "asia-pacific", "middle-east", "africa"]
GEOGRAPHIES: tuple[Geography, ...] = get_args(Geography)
# Artifact Registry multi-region locations.
RegistryLocation = Literal["us", "europe", "asia"]


class CatalogError(FleetError):
    """The catalog file is unreadable or invalid."""


def slug(text: str) -> str:
    """'São Paulo' -> 'sao-paulo', 'St. Ghislain' -> 'st-ghislain': the city part of endpoint names."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Region(_Strict):
    """One Cloud Run region: facts about it, whether the fleet uses it, and what it changes."""

    id: str = Field(description="the Cloud Run region id", json_schema_extra={"enum": REGION_IDS})
    city: str = Field(min_length=1, description="where it is; its slug names the region's endpoints (demo-iowa)")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2")
    geography: Geography = Field(description="for model region selectors and the Artifact Registry it pulls from")
    tier: Literal[1, 2] = Field(description="Cloud Run pricing tier (1 is cheaper)")
    gpu_available: bool = Field(False, description="Cloud Run offers nvidia-l4 GPUs here")
    enabled: bool = Field(True, description="false removes the region from every model's and the shared regions")
    overrides: SettingsOverride = Field(SettingsOverride(), description="this region's endpoints' settings: over the "
                                        "catalog's and the stack's defaults, under a model's and forced settings")

    @field_validator("id")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in CLOUD_RUN_REGIONS:
            guess = difflib.get_close_matches(v, CLOUD_RUN_REGIONS, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise ValueError(f"unknown Cloud Run region '{v}'{hint}")
        return v

    @model_validator(mode="after")
    def _gpu_facts(self) -> Self:
        if self.gpu_available and self.id not in L4_GPU_REGIONS:
            raise ValueError(f"gpu_available: Cloud Run offers no nvidia-l4 in {self.id}")
        if self.overrides.gpu and not self.gpu_available:
            raise ValueError(f"overrides.gpu: {self.id} has no GPU (gpu_available is false)")
        return self

    @property
    def city_slug(self) -> str:
        return slug(self.city)


class SharedSpec(_Strict):
    """Where the shared multi-tenant inference service runs, and how it differs from the defaults."""

    regions: list[str] = Field(min_length=1, description="the regions that run a shared service",
                               json_schema_extra={"items": {"type": "string", "enum": REGION_IDS}})
    settings: SettingsOverride = Field(SettingsOverride(), description="the shared services' settings: over the "
                                       "catalog's and the stack's defaults")


class Catalog(_Strict):
    """The region catalog (regions.yaml): every Cloud Run region, the fleet's default settings, and the shared API's
    regions. Settings precedence: README "Settings and their precedence"."""

    defaults: EndpointSettings = Field(description="every service's settings unless a more specific layer sets them")
    gpu_defaults: SettingsOverride = Field(
        SettingsOverride(), description="what a service with gpu: true gets over the catalog's defaults and region "
                                        "overrides (or shared.settings), under model and shared settings: one "
                                        "nvidia-l4's shape")
    shared: SharedSpec = Field(description="the shared multi-tenant inference API")
    registries: dict[Geography, RegistryLocation] = Field(
        description="Artifact Registry multi-region that serves each geography's image pulls")
    regions: list[Region] = Field(min_length=1, description="one entry per Cloud Run region")

    @field_validator("gpu_defaults")
    @classmethod
    def _not_gpu_itself(cls, v: SettingsOverride) -> SettingsOverride:
        if v.gpu is not None:
            raise ValueError("gpu: gpu_defaults apply to services that set gpu; set gpu in defaults or overrides")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seen: dict[str, int] = {}
        cities: dict[str, str] = {}
        for i, region in enumerate(self.regions):
            if region.id in seen:
                raise ValueError(f"regions[{region.id}]: duplicate id (entries {seen[region.id] + 1} and {i + 1} of "
                                 "the list, counting from 1)")
            seen[region.id] = i
            if region.city_slug in cities:
                raise ValueError(f"regions[{region.id}]: city '{region.city}' names an endpoint the same as "
                                 f"{cities[region.city_slug]}; endpoint names must be unique")
            cities[region.city_slug] = region.id
            if region.geography not in self.registries:
                raise ValueError(f"registries: no Artifact Registry location for geography '{region.geography}' "
                                 f"(used by {region.id})")
        for rid in self.shared.regions:
            if rid not in seen:
                raise ValueError(f"shared.regions: '{rid}' is not in the catalog's regions")
        if len(set(self.shared.regions)) != len(self.shared.regions):
            raise ValueError("shared.regions: a region is listed twice")
        return self

    def region(self, region_id: str) -> Region:
        for region in self.regions:
            if region.id == region_id:
                return region
        raise KeyError(region_id)

    @property
    def enabled(self) -> list[Region]:
        return [r for r in self.regions if r.enabled]

    def select(self, selector: str | list[str]) -> list[Region]:
        """'all', a geography, or a list of region ids -> the enabled regions it names, in catalog order."""
        if isinstance(selector, list):
            ids = set(selector)
            return [r for r in self.enabled if r.id in ids]
        if selector == "all":
            return self.enabled
        return [r for r in self.enabled if r.geography == selector]


def _unique_key_loader() -> type[yaml.SafeLoader]:
    """A SafeLoader that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            keys.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def read_yaml(path: Path, error: type[FleetError]) -> Any:
    """Parse a YAML file; a missing file or bad syntax is an `error` naming the file and line."""
    shown = file_label(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{shown}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{shown}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{shown}:{where} invalid YAML: {problem}") from None


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate the catalog; raises CatalogError with one line per mistake."""
    path = Path(path)
    data = read_yaml(path, CatalogError)
    if not isinstance(data, dict):
        raise CatalogError(f"{file_label(path)}: expected a mapping with defaults, shared, registries and regions")
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(describe(path.name, exc, data, [Catalog, Region, SharedSpec, EndpointSettings])) from None
    try:  # the GPU defaults must make a valid GPU service on their own
        merge(catalog.defaults, SettingsOverride(gpu=True), catalog.gpu_defaults)
    except ValidationError as exc:
        raise CatalogError(describe(f"{path.name}: gpu_defaults", exc, {}, [EndpointSettings])) from None
    for region in catalog.regions:  # each region's overrides must still make a valid service
        try:
            gpu = catalog.defaults.gpu if region.overrides.gpu is None else region.overrides.gpu
            merge(catalog.defaults, region.overrides, *([catalog.gpu_defaults] if gpu else []))
        except ValidationError as exc:
            raise CatalogError(describe(f"{path.name}: regions[{region.id}].overrides", exc, {},
                                        [EndpointSettings])) from None
    return catalog
