"""The layers behind every service's settings, named as `fleet plan --explain` prints them, and the catalog's
gpu_defaults, which apply to a service only when the highest layer that says anything about `gpu` says true."""

from __future__ import annotations

from typing import Any

import pytest

from components.catalog import Catalog
from components.errors import FleetError
from components.layout import FleetLayout, plan_fleet
from components.precedence import (
    CATALOG_DEFAULT,
    CATALOG_GPU,
    CATALOG_SHARED,
    FORCED,
    MODEL_SETTING,
    REGION_OVERRIDE,
    SHARED_SETTING,
    STACK_SETTING,
    Layer,
    applied,
    catalog_file_name,
    dedicated_layers,
    origins,
    resolve,
    shared_layers,
)
from components.settings import SettingsOverride
from components.stack_config import StackConfig

GPU_SHAPE = {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}


def catalog(gpu_defaults: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> Catalog:
    return Catalog.model_validate({
        "defaults": defaults or {}, "gpu_defaults": gpu_defaults or {},
        "shared": {"regions": ["us-central1"]}, "registries": {"americas": "us"},
        "regions": [{"id": "us-central1", "city": "Iowa", "country": "US", "geography": "americas", "tier": 1,
                     "gpu_available": True}]})


def config(**fields: Any) -> StackConfig:
    return StackConfig.model_validate({"project": "layers-test", "api_key_sha256": ["ab" * 32],
                                       "models": [{"name": "demo", "regions": ["us-central1"]}], **fields})


def test_a_dedicated_endpoints_layers_in_order_each_named_where_it_is_written() -> None:
    cat, conf = catalog(), config()
    layers = dedicated_layers(cat, conf, cat.region("us-central1"), conf.models[0], "regions.yaml", "Pulumi.x.yaml")
    assert [(layer.kind, layer.source, layer.gpu_only) for layer in layers] == [
        (CATALOG_DEFAULT, "regions.yaml: defaults", False),
        (STACK_SETTING, "Pulumi.x.yaml: yolo-fleet:settings", False),
        (REGION_OVERRIDE, "regions.yaml: regions[us-central1].overrides", False),
        (CATALOG_GPU, "regions.yaml: gpu_defaults", True),
        (MODEL_SETTING, "Pulumi.x.yaml: yolo-fleet:models[demo].settings", False),
        (FORCED, "Pulumi.x.yaml: yolo-fleet:forced_settings", False)]


def test_a_shared_services_layers_in_order_each_named_where_it_is_written() -> None:
    layers = shared_layers(catalog(), config(), "regions.yaml", "Pulumi.x.yaml")
    assert [(layer.kind, layer.source, layer.gpu_only) for layer in layers] == [
        (CATALOG_DEFAULT, "regions.yaml: defaults", False),
        (STACK_SETTING, "Pulumi.x.yaml: yolo-fleet:settings", False),
        (CATALOG_SHARED, "regions.yaml: shared.settings", False),
        (CATALOG_GPU, "regions.yaml: gpu_defaults", True),
        (SHARED_SETTING, "Pulumi.x.yaml: yolo-fleet:shared_settings", False),
        (FORCED, "Pulumi.x.yaml: yolo-fleet:forced_settings", False)]


def test_the_catalog_is_named_by_its_file_name_also_when_given_as_a_path() -> None:
    assert catalog_file_name(config(catalog="catalogs/regions-small.yaml")) == "regions-small.yaml"


def test_catalog_defaults_are_only_the_keys_the_catalog_writes() -> None:
    """A key the catalog leaves out comes from the built-in default, and --explain says so."""
    layers = shared_layers(catalog(defaults={"max_instances": 5}), config(), "regions.yaml", "Pulumi.x.yaml")
    assert layers[0].values.changes() == {"max_instances": 5}
    assert origins(layers)["max_instances"].kind == CATALOG_DEFAULT
    assert origins(layers)["cpu"].kind == "built-in default"


def gpu_layers(*gpus: bool | None) -> list[Layer]:
    """Layers setting `gpu` as given (None: not set), with a GPU-only layer setting max_instances in the middle."""
    layers = [Layer(f"layer {i}", "test", SettingsOverride() if gpu is None else SettingsOverride(gpu=gpu))
              for i, gpu in enumerate(gpus)]
    layers.insert(1, Layer(CATALOG_GPU, "test", SettingsOverride(max_instances=3), gpu_only=True))
    return layers


@pytest.mark.parametrize(("gpus", "expected"), [
    ((None, None), False),  # no layer says: the built-in default, no GPU
    ((True, None), True),  # a low layer says gpu, nothing above undoes it
    ((None, True), True),
    ((True, False), False),  # the highest layer that says anything wins
    ((False, True), True),
    ((True, None, False, None), False),
])
def test_gpu_defaults_apply_when_the_highest_layer_that_sets_gpu_says_true(gpus: tuple[bool | None, ...],
                                                                           expected: bool) -> None:
    layers = gpu_layers(*gpus)
    kinds = [layer.kind for layer in applied(layers)]
    assert (CATALOG_GPU in kinds) is expected
    assert len(kinds) == len(layers) - (not expected), "only the GPU-only layer is ever left out"
    assert (origins(layers)["max_instances"].kind == CATALOG_GPU) is expected


def test_a_gpu_endpoint_takes_the_gpu_defaults_and_a_cpu_endpoint_in_the_same_stack_does_not() -> None:
    conf = config(models=[{"name": "cpu-model", "regions": ["us-central1"]},
                          {"name": "gpu-model", "regions": ["us-central1"], "settings": GPU_SHAPE}])
    plan = plan_fleet(catalog({"timeout_seconds": 300, "concurrency": 8}), conf, "Pulumi.x.yaml", "x")
    by_model = {s.model.name: s for s in plan.endpoints if s.model}
    gpu, cpu = by_model["gpu-model"], by_model["cpu-model"]
    assert (gpu.settings.timeout_seconds, gpu.settings.concurrency) == (300, 8)
    assert gpu.origins()["concurrency"].source == "regions.yaml: gpu_defaults"
    assert (cpu.settings.timeout_seconds, cpu.settings.concurrency) == (60, 4), "built-in defaults, no GPU shape"
    assert cpu.origins()["concurrency"].kind == "built-in default"
    assert resolve(cpu.layers) == cpu.settings


# --- components/layout.py: names, clashes, quotas, pure data ---------------------------------------------------

REGIONS = [{"id": "us-central1", "city": "Iowa", "country": "US", "geography": "americas", "tier": 1,
            "gpu_available": True},
           {"id": "europe-west4", "city": "Eemshaven", "country": "NL", "geography": "europe", "tier": 1,
            "gpu_available": True},
           {"id": "us-east1", "city": "South Carolina", "country": "US", "geography": "americas", "tier": 1}]


def fleet(models: list[dict[str, Any]], shared: list[str] | None = None, gpu_defaults: dict[str, Any] | None = None,
          disabled: tuple[str, ...] = (), **stack: Any) -> FleetLayout:
    cat = Catalog.model_validate({"defaults": {}, "gpu_defaults": gpu_defaults or {},
                                  "shared": {"regions": shared or ["us-east1"]},
                                  "registries": {"americas": "us", "europe": "europe"},
                                  "regions": [{**r, "enabled": r["id"] not in disabled} for r in REGIONS]})
    return plan_fleet(cat, config(models=models, **stack), "Pulumi.x.yaml", "x")


def gpu_model(name: str, regions: list[str], **settings: Any) -> dict[str, Any]:
    return {"name": name, "regions": regions, "settings": {**GPU_SHAPE, **settings}}


def max_instances(layout: FleetLayout) -> dict[str, int]:
    return {s.name: s.settings.max_instances for s in layout.services}


def test_defaulted_gpu_services_share_their_regions_quota_in_plan_order() -> None:
    plan = fleet([gpu_model("a", ["us-central1", "europe-west4"]), gpu_model("b", ["us-central1"]),
                  {"name": "c", "regions": ["us-central1"]}], gpu_quota_per_region=5)
    # us-central1: 5 L4s for two services, the first gets the odd one; europe-west4 has its own 5, capped at the
    # catalog's max_instances (10 built in) only when the share is larger; CPU services are never fitted.
    assert max_instances(plan) == {"a-iowa": 3, "b-iowa": 2, "a-eemshaven": 5, "c-iowa": 10,
                                   "shared-south-carolina": 10}


def test_a_share_above_the_catalog_value_keeps_the_catalog_value() -> None:
    plan = fleet([gpu_model("a", ["us-central1"])], gpu_defaults={"max_instances": 4}, gpu_quota_per_region=100)
    assert max_instances(plan)["a-iowa"] == 4


def test_a_max_instances_the_stack_sets_is_never_fitted_and_takes_its_part_of_the_quota() -> None:
    plan = fleet([gpu_model("set", ["us-central1"], max_instances=3), gpu_model("free", ["us-central1"])],
                 gpu_quota_per_region=5)
    assert max_instances(plan) == {"set-iowa": 3, "free-iowa": 2, "shared-south-carolina": 10}
    over = fleet([gpu_model("set", ["us-central1"], max_instances=7), gpu_model("free", ["us-central1"])],
                 gpu_quota_per_region=5)
    assert max_instances(over)["free-iowa"] == 1, "nothing left: at least one instance, the policy reports it"
    # a region whose GPU services all have a set max_instances leaves the next region's fitting alone
    later = fleet([gpu_model("set", ["us-central1"], max_instances=3), gpu_model("free", ["europe-west4"])],
                  gpu_quota_per_region=4)
    assert max_instances(later) == {"set-iowa": 3, "free-eemshaven": 4, "shared-south-carolina": 10}


def test_a_shared_gpu_service_is_fitted_to_the_quota_unless_the_stack_sets_its_max_instances() -> None:
    models = [{"name": "a", "regions": ["europe-west4"]}]
    plan = fleet(models, shared=["us-central1"], shared_settings=GPU_SHAPE, gpu_quota_per_region=3,
                 gpu_defaults={"timeout_seconds": 120})
    assert max_instances(plan)["shared-iowa"] == 3
    assert plan.shared[0].origins()["timeout_seconds"].source == "regions.yaml: gpu_defaults"
    assert plan.shared[0].origins()["cpu"].source == "Pulumi.x.yaml: yolo-fleet:shared_settings"
    assert plan.shared[0].origins()["concurrency"].source == "components/settings.py"
    kept = fleet(models, shared=["us-central1"], shared_settings={**GPU_SHAPE, "max_instances": 6},
                 gpu_quota_per_region=3)
    assert max_instances(kept)["shared-iowa"] == 6, "the policy reports it over the quota; the plan keeps it"


def test_without_quota_a_gpu_service_keeps_one_instance_or_its_min_instances() -> None:
    plan = fleet([gpu_model("a", ["us-central1"]), gpu_model("warm", ["europe-west4"], min_instances=2)],
                 gpu_quota_per_region=0)
    assert max_instances(plan) == {"a-iowa": 1, "warm-eemshaven": 2, "shared-south-carolina": 10}


def test_a_gpu_in_a_region_without_one_stops_the_plan_naming_model_and_region() -> None:
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: models\[a\] in regions\[us-east1\]: gpu: us-east1 has no "
                                         r"GPU; choose a region with gpu_available or drop gpu$"):
        fleet([gpu_model("a", ["us-east1"])], gpu_quota_per_region=5)
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: shared in regions\[us-east1\]: gpu: us-east1 has no GPU$"):
        fleet([{"name": "a", "regions": ["us-central1"]}], shared_settings=GPU_SHAPE)


def test_an_unknown_region_in_a_models_list_is_named_with_the_catalog() -> None:
    with pytest.raises(FleetError) as e:
        fleet([{"name": "a", "regions": ["us-central1", "mars-north1", "moon-1"]}])
    assert str(e.value) == ("Pulumi.x.yaml: models[a].regions: mars-north1, moon-1 not in the catalog (regions.yaml); "
                            "`fleet regions` lists the ids")


def test_a_bad_combination_of_layers_names_the_endpoint() -> None:
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: models\[a\] in regions\[us-central1\]: .*min_instances "
                                         r"\(5\) is greater than max_instances \(2\)"):
        fleet([{"name": "a", "regions": ["us-central1"], "settings": {"min_instances": 5}}],
              settings={"max_instances": 2})
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: shared in regions\[us-east1\]: "):
        fleet([{"name": "a", "regions": ["us-central1"]}], shared_settings={"min_instances": 5},
              settings={"max_instances": 2})


@pytest.mark.parametrize(("city", "fits"), [("c" * 24, True), ("c" * 25, False)])
def test_endpoint_names_up_to_49_characters_pass_and_50_stop_the_plan(city: str, fits: bool) -> None:
    model = "m" * 24  # the longest model name; the city's slug makes the rest
    region = {**REGIONS[1], "id": "us-central1", "city": city}
    cat = Catalog.model_validate({"defaults": {}, "shared": {"regions": ["us-central1"]},
                                  "registries": {"europe": "europe"}, "regions": [region]})

    def plan() -> FleetLayout:
        return plan_fleet(cat, config(models=[{"name": model, "regions": "all"}]), "Pulumi.x.yaml", "x")

    if fits:
        assert [len(s.name) for s in plan().endpoints] == [49]
    else:
        with pytest.raises(FleetError, match=f"endpoint name '{model}-{city}' is longer than 49 characters; use a "
                                             "shorter model name"):
            plan()


def test_a_disabled_shared_region_is_skipped_and_the_others_planned() -> None:
    plan = fleet([{"name": "a", "regions": ["us-central1"]}], shared=["us-east1", "us-central1"])
    assert [(s.name, s.region.id, s.role) for s in plan.shared] == [("shared-south-carolina", "us-east1", "shared"),
                                                                   ("shared-iowa", "us-central1", "shared")]
    assert plan.endpoints[0].role == "dedicated"
    skipped = fleet([{"name": "a", "regions": ["us-central1"]}], shared=["us-east1", "us-central1"],
                    disabled=("us-east1",))
    assert [s.name for s in skipped.shared] == ["shared-iowa"]


def test_services_are_found_by_their_cloud_run_name() -> None:
    plan = fleet([{"name": "a", "regions": ["us-central1"]}])
    assert [s.service_name for s in plan.services] == ["a-iowa-x", "shared-south-carolina-x"]
    assert plan.by_service_name("a-iowa-x") is plan.endpoints[0]
    assert plan.by_service_name("shared-south-carolina-x") is plan.shared[0]
    assert plan.by_service_name("a-iowa") is None, "the logical name is not the service's"
    assert plan.model_accounts == {"a": plan.endpoints[0].account_id}


def test_a_model_named_like_a_shared_service_is_a_clash_naming_both() -> None:
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: two services would both be named shared-eemshaven, "
                                         r"shared-iowa; rename a model$"):
        fleet([{"name": "shared", "regions": ["us-central1", "europe-west4"]}], shared=["us-central1", "europe-west4"])
    with pytest.raises(FleetError, match=r"^Pulumi\.x\.yaml: model shared-iowa and shared-iowa would share service "
                                         r"account .*; rename the model$"):
        fleet([{"name": "shared-iowa", "regions": ["europe-west4"]}], shared=["us-central1"])


def test_the_service_account_quota_holds_exactly_the_accounts_needed() -> None:
    models = [{"name": n, "regions": ["us-central1", "europe-west4"]} for n in ("a", "b")]
    assert len(fleet(models, service_account_quota=3).services) == 5, "2 models + 1 shared region = 3 accounts"
    with pytest.raises(FleetError) as e:
        fleet(models, service_account_quota=2)
    assert str(e.value).startswith("Pulumi.x.yaml: the stack needs 3 service accounts (2 for its models, one each, "
                                   "and 1 for the shared regions) but the project's quota is 2 (IAM")
