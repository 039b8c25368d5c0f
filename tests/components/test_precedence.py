"""Which setting wins: every pair of layers with the same key set at both, for dedicated endpoints and shared
services, and which regions a model gets when one is disabled, for every kind of region selector.

Planned as pure data (components/layout.py, no Pulumi) from a small catalog in which only the layers a test
sets say anything, so each assertion has one possible reason.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from components.catalog import Catalog
from components.layout import FleetLayout, ServicePlan, plan_fleet
from components.precedence import (
    BUILT_IN,
    CATALOG_DEFAULT,
    CATALOG_SHARED,
    FORCED,
    MODEL_SETTING,
    REGION_OVERRIDE,
    SHARED_SETTING,
    STACK_SETTING,
)
from components.stack_config import StackConfig

DIGEST = "ab" * 32
REGIONS = [  # two geographies, so a geography selector leaves a region out
    {"id": "us-central1", "city": "Iowa", "country": "US", "geography": "americas", "tier": 1},
    {"id": "us-east1", "city": "South Carolina", "country": "US", "geography": "americas", "tier": 1},
    {"id": "us-west1", "city": "Oregon", "country": "US", "geography": "americas", "tier": 1},
    {"id": "europe-west1", "city": "St. Ghislain", "country": "BE", "geography": "europe", "tier": 1},
    {"id": "europe-west4", "city": "Eemshaven", "country": "NL", "geography": "europe", "tier": 1},
]
DEDICATED = (CATALOG_DEFAULT, STACK_SETTING, REGION_OVERRIDE, MODEL_SETTING, FORCED)  # lowest first
SHARED = (CATALOG_DEFAULT, STACK_SETTING, CATALOG_SHARED, SHARED_SETTING, FORCED)
# A key with values that differ from each other and from the built-in default, both ways round (a "bigger
# wins" or "first wins" bug passes one of them).
VALUES: list[tuple[str, Any, Any]] = [("max_instances", 3, 7), ("max_instances", 7, 3), ("memory", "8Gi", "2Gi"),
                                      ("ingress", "internal", "internal-and-cloud-load-balancing"),
                                      ("alert_error_ratio", 0.2, 0.01)]


def layout(layers: dict[str, dict[str, Any]], models: list[dict[str, Any]] | None = None,
           disabled: tuple[str, ...] = ()) -> FleetLayout:
    """The layout of a stack whose settings layers say only `layers` (kind -> values)."""
    catalog = Catalog.model_validate({
        "defaults": layers.get(CATALOG_DEFAULT, {}),
        "shared": {"regions": ["us-central1"], "settings": layers.get(CATALOG_SHARED, {})},
        "registries": {"americas": "us", "europe": "europe"},
        "regions": [{**r, "enabled": r["id"] not in disabled,
                     "overrides": layers.get(REGION_OVERRIDE, {}) if r["id"] == "us-central1" else {}}
                    for r in REGIONS]})
    config = StackConfig.model_validate({
        "project": "precedence-test", "api_key_sha256": [DIGEST],
        "models": models or [{"name": "demo", "regions": ["us-central1"], "settings": layers.get(MODEL_SETTING, {})}],
        "settings": layers.get(STACK_SETTING, {}), "shared_settings": layers.get(SHARED_SETTING, {}),
        "forced_settings": layers.get(FORCED, {})})
    return plan_fleet(catalog, config, "Pulumi.test.yaml", "test")


def one(plan: FleetLayout, role: str = "dedicated") -> ServicePlan:
    """The plan's only dedicated endpoint, or its only shared service."""
    services = plan.endpoints if role == "dedicated" else plan.shared
    assert len(services) == 1
    return services[0]


@pytest.mark.parametrize(("role", "lower", "higher"),
                         [("dedicated", *pair) for pair in itertools.combinations(DEDICATED, 2)]
                         + [("shared", *pair) for pair in itertools.combinations(SHARED, 2)])
@pytest.mark.parametrize(("key", "low_value", "high_value"), VALUES)
def test_the_higher_layer_wins_every_pair(role: str, lower: str, higher: str, key: str, low_value: Any,
                                          high_value: Any) -> None:
    service = one(layout({lower: {key: low_value}, higher: {key: high_value}}), role)
    assert getattr(service.settings, key) == high_value, f"{higher} must beat {lower}"
    assert service.origins()[key].kind == higher
    # and the lower layer alone still counts: it beats the built-in default
    alone = one(layout({lower: {key: low_value}}), role)
    assert (getattr(alone.settings, key), alone.origins()[key].kind) == (low_value, lower)


def test_every_layer_at_once_gives_the_forced_value_and_unset_keys_come_from_the_built_in_defaults() -> None:
    layers = {kind: {"max_instances": 2 + i} for i, kind in enumerate(DEDICATED + SHARED)}
    plan = layout(layers)
    forced = layers[FORCED]["max_instances"]
    assert one(plan).settings.max_instances == one(plan, "shared").settings.max_instances == forced
    assert (one(plan).settings.cpu, one(plan).origins()["cpu"].kind) == (2, BUILT_IN)


def test_a_region_override_applies_to_its_region_only_and_not_to_the_shared_service_there() -> None:
    plan = layout({REGION_OVERRIDE: {"min_instances": 1}, STACK_SETTING: {"min_instances": 0}},
                  models=[{"name": "demo", "regions": "americas"}])
    warm = {s.region.id: s.settings.min_instances for s in plan.endpoints}
    assert warm == {"us-central1": 1, "us-east1": 0, "us-west1": 0}
    assert one(plan, "shared").settings.min_instances == 0, "the shared service in us-central1 takes shared settings"


def test_each_layer_is_named_where_it_is_written() -> None:
    service = one(layout({REGION_OVERRIDE: {"cpu": 4}, MODEL_SETTING: {"max_instances": 3},
                          FORCED: {"min_instances": 1}}))
    sources = {key: service.origins()[key].source for key in ("cpu", "max_instances", "min_instances")}
    assert sources == {"cpu": "regions.yaml: regions[us-central1].overrides",
                       "max_instances": "Pulumi.test.yaml: yolo-fleet:models[demo].settings",
                       "min_instances": "Pulumi.test.yaml: yolo-fleet:forced_settings"}


SELECTORS = [("all", {"us-central1", "us-west1", "europe-west1", "europe-west4"}),
             ("americas", {"us-central1", "us-west1"}),
             ("europe", {"europe-west1", "europe-west4"}),
             (["us-east1", "us-west1", "europe-west4"], {"us-west1", "europe-west4"})]


@pytest.mark.parametrize(("selector", "expected"), SELECTORS, ids=["all", "geography", "other-geography", "list"])
def test_a_disabled_region_gets_no_endpoint_whatever_the_selector(selector: str | list[str],
                                                                   expected: set[str]) -> None:
    plan = layout({}, models=[{"name": "demo", "regions": selector}], disabled=("us-east1",))
    assert {s.region.id for s in plan.endpoints} == expected
    enabled = layout({}, models=[{"name": "demo", "regions": selector}])
    assert {s.region.id for s in enabled.endpoints} - expected <= {"us-east1"}, "only the disabled one is missing"
    if selector != "europe":
        assert "us-east1" in {s.region.id for s in enabled.endpoints}, "enabled again, it is deployed"


def test_a_disabled_shared_region_has_no_shared_service() -> None:
    assert layout({}, disabled=("us-central1",), models=[{"name": "demo", "regions": "europe"}]).shared == []
    assert [s.region.id for s in layout({}).shared] == ["us-central1"]
