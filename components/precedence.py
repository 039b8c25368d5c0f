"""Settings precedence: the layers a service's settings come from, in order, and which layer set each value.

Most specific wins; one stack-level layer forces. Lowest first:

- a dedicated endpoint of model M in region R: built-in default < catalog `defaults` < stack `settings`
  < R's `overrides` < catalog `gpu_defaults` < M's `settings` < stack `forced_settings`
- a shared service in region R: built-in default < catalog `defaults` < stack `settings`
  < catalog `shared.settings` < catalog `gpu_defaults` < stack `shared_settings` < stack `forced_settings`

`gpu_defaults` apply only to a service that ends up with `gpu: true` (one L4's shape: a region's warm
`min_instances: 1` or `max_instances: 20`, chosen for CPU services, must not become warm or twenty L4s).

Defaults fill gaps: the catalog's `defaults` are the fleet's, a stack's `settings` that stack's (dev: smaller
instances), and neither undoes what the catalog says about one region (keep the home region warm), which
holds in every stack. A model's settings beat its regions' (a GPU model needs its memory wherever it runs).
`forced_settings` is the one layer that wins over everything, for what a stack must hold whatever the catalog
says (dev keeps nothing warm): an override that beats a region's must be asked for, never happen silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.catalog import Catalog, Region
from components.settings import EndpointSettings, SettingsOverride, merge
from components.stack_config import ModelSpec, StackConfig

# What users call each layer (`fleet plan --explain` prints these), lowest first.
BUILT_IN = "built-in default"
CATALOG_DEFAULT = "catalog default"
STACK_SETTING = "stack setting"
REGION_OVERRIDE = "region override"
MODEL_SETTING = "model setting"
CATALOG_SHARED = "catalog shared setting"
CATALOG_GPU = "catalog gpu default"
SHARED_SETTING = "shared setting"
FORCED = "forced"
# The layers a stack's own config writes: a value from one of these is the user's choice, never re-fitted.
STACK_CHOICES = frozenset({STACK_SETTING, MODEL_SETTING, SHARED_SETTING, FORCED})


@dataclass(frozen=True)
class Layer:
    """One source of settings: what users call it, where it is written, and the values it sets."""

    kind: str
    source: str  # 'regions.yaml: regions[us-central1].overrides', 'Pulumi.dev.yaml: yolo-fleet:settings'
    values: SettingsOverride
    gpu_only: bool = False  # applies only to a service that ends up with gpu: true (the catalog's gpu_defaults)


# The fields' defaults in EndpointSettings: what a service gets when no layer says anything.
BUILT_IN_LAYER = Layer(BUILT_IN, "components/settings.py", SettingsOverride())


def _catalog_defaults(catalog: Catalog, catalog_file: str) -> Layer:
    given = catalog.defaults.model_dump(include=catalog.defaults.model_fields_set)
    return Layer(CATALOG_DEFAULT, f"{catalog_file}: defaults", SettingsOverride.model_validate(given))


def _gpu_defaults(catalog: Catalog, catalog_file: str) -> Layer:
    return Layer(CATALOG_GPU, f"{catalog_file}: gpu_defaults", catalog.gpu_defaults, gpu_only=True)


def dedicated_layers(catalog: Catalog, config: StackConfig, region: Region, model: ModelSpec, catalog_file: str,
                     stack_file: str) -> tuple[Layer, ...]:
    """The layers of model `model`'s endpoint in `region`, lowest first."""
    return (_catalog_defaults(catalog, catalog_file),
            Layer(STACK_SETTING, f"{stack_file}: yolo-fleet:settings", config.settings),
            Layer(REGION_OVERRIDE, f"{catalog_file}: regions[{region.id}].overrides", region.overrides),
            _gpu_defaults(catalog, catalog_file),
            Layer(MODEL_SETTING, f"{stack_file}: yolo-fleet:models[{model.name}].settings", model.settings),
            Layer(FORCED, f"{stack_file}: yolo-fleet:forced_settings", config.forced_settings))


def shared_layers(catalog: Catalog, config: StackConfig, catalog_file: str, stack_file: str) -> tuple[Layer, ...]:
    """The layers of every shared service, lowest first (a region's `overrides` are its endpoints', not these)."""
    return (_catalog_defaults(catalog, catalog_file),
            Layer(STACK_SETTING, f"{stack_file}: yolo-fleet:settings", config.settings),
            Layer(CATALOG_SHARED, f"{catalog_file}: shared.settings", catalog.shared.settings),
            _gpu_defaults(catalog, catalog_file),
            Layer(SHARED_SETTING, f"{stack_file}: yolo-fleet:shared_settings", config.shared_settings),
            Layer(FORCED, f"{stack_file}: yolo-fleet:forced_settings", config.forced_settings))


def catalog_file_name(config: StackConfig) -> str:
    """How messages name the catalog: its file name (`regions.yaml`), also when given as a path."""
    return Path(config.catalog).name


def resolve(layers: Sequence[Layer]) -> EndpointSettings:
    """Apply the layers lowest first over the built-in defaults; pydantic's ValidationError if the result breaks
    one of Cloud Run's limits."""
    return merge(EndpointSettings(), *(layer.values for layer in applied(layers)))


def applied(layers: Sequence[Layer]) -> list[Layer]:
    """The layers that apply: all, less the GPU-only ones when the service has no GPU (gpu_defaults cannot set gpu)."""
    gpu = next((layer.values.gpu for layer in reversed(layers) if layer.values.gpu is not None), EndpointSettings().gpu)
    return [layer for layer in layers if gpu or not layer.gpu_only]


def origins(layers: Sequence[Layer]) -> dict[str, Layer]:
    """Setting -> the layer its value comes from: the highest one that sets it, else the built-in default."""
    found = dict.fromkeys(EndpointSettings.model_fields, BUILT_IN_LAYER)
    for layer in applied(layers):
        found.update(dict.fromkeys(layer.values.changes(), layer))
    return found
