"""Cloud Run's cpu/memory table, cell by cell, both sides of every bound: what `fleet plan` accepts must be what
Cloud Run accepts. The table is written out here from the docs ("Configure memory limits": 1 vCPU up to 4 GiB,
2 vCPU up to 8 GiB, 4 vCPU 2-16 GiB, 6 vCPU 4-24 GiB, 8 vCPU 4-32 GiB; "More than 4 GiB needs 2 vCPU, more than
8 GiB 4, more than 16 GiB 6, more than 24 GiB 8"), not read from components/settings.py, so a changed limit
there fails here. The project's own memory choices start at 2Gi (the server needs it)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from components.errors import FleetError
from components.settings import EndpointSettings, SettingsOverride, merge
from fleet.program import evaluate

# vCPU -> (least, most) GiB, from Cloud Run's documentation
CLOUD_RUN_TABLE = {1: (0.5, 4), 2: (0.5, 8), 4: (2, 16), 6: (4, 24), 8: (4, 32)}
MEMORY_GIB = (2, 4, 8, 16, 24, 32)  # what a setting may name
CELLS = [(cpu, gib) for cpu in CLOUD_RUN_TABLE for gib in MEMORY_GIB]


def allowed(cpu: int, gib: int) -> bool:
    least, most = CLOUD_RUN_TABLE[cpu]
    return least <= gib <= most


def test_the_table_has_both_sides_of_every_bound():
    """Each vCPU count has an accepted and a refused cell here."""
    for cpu in CLOUD_RUN_TABLE:
        assert {allowed(cpu, g) for g in MEMORY_GIB} == {True, False}, cpu


@pytest.mark.parametrize(("cpu", "gib"), CELLS, ids=[f"cpu{c}-{g}Gi" for c, g in CELLS])
def test_every_cpu_memory_pair_is_accepted_exactly_when_cloud_run_accepts_it(cpu, gib):
    values = {"cpu": cpu, "memory": f"{gib}Gi"}
    if allowed(cpu, gib):
        settings = EndpointSettings(**values)
        assert (settings.cpu, settings.memory_gib) == (cpu, gib)
        # the same pair reached by overrides (a region's cpu, a model's memory) is re-checked as a whole
        assert merge(EndpointSettings(), SettingsOverride(cpu=cpu), SettingsOverride(memory=f"{gib}Gi")) == settings
        return
    with pytest.raises(ValidationError) as info:
        EndpointSettings(**values)
    message = str(info.value)
    too_much = gib > CLOUD_RUN_TABLE[cpu][1]
    assert (f"memory {gib}Gi needs more vCPU: cpu {cpu} allows at most {CLOUD_RUN_TABLE[cpu][1]}Gi" if too_much
            else f"cpu {cpu} needs at least {CLOUD_RUN_TABLE[cpu][0]}Gi of memory (got {gib}Gi)") in message
    with pytest.raises(ValidationError):
        merge(EndpointSettings(), SettingsOverride(cpu=cpu), SettingsOverride(memory=f"{gib}Gi"))


@pytest.mark.parametrize("cpu", [0, 3, 5, 7, 9, 16])
def test_cpu_counts_cloud_run_does_not_offer_are_refused(cpu):
    with pytest.raises(ValidationError, match=f"cpu must be one of 1, 2, 4, 6, 8 \\(got {cpu}\\)"):
        EndpointSettings(cpu=cpu, memory="4Gi")
    with pytest.raises(ValidationError, match="cpu must be one of"):
        SettingsOverride(cpu=cpu)


@pytest.mark.parametrize("memory", ["1Gi", "3Gi", "33Gi", "64Gi", "4096Mi", "4G", "4"])
def test_memory_outside_the_choices_is_refused(memory):
    with pytest.raises(ValidationError, match="memory must be one of 2Gi, 4Gi, 8Gi, 16Gi, 24Gi, 32Gi"):
        EndpointSettings(cpu=8, memory=memory)


@pytest.mark.parametrize(("field", "top"), [("concurrency", 1000), ("timeout_seconds", 3600),
                                            ("max_instances", 1000)])
def test_cloud_run_ranges_at_their_ends(field, top):
    """Concurrency 1-1000, request timeout 1-3600 s, max instances 1-1000: each end accepted, one past refused."""
    for value in (1, top):
        assert getattr(EndpointSettings(**{field: value, "min_instances": 0}), field) == value
        assert SettingsOverride(**{field: value}).changes() == {field: value}
    for value in (0, top + 1):
        with pytest.raises(ValidationError):
            EndpointSettings(**{field: value})
        with pytest.raises(ValidationError):
            SettingsOverride(**{field: value})


@pytest.mark.parametrize(("cpu", "gib", "ok"), [(4, 16, True), (8, 32, True), (2, 8, False), (4, 8, False),
                                                (6, 16, True), (6, 8, False)])
def test_gpu_needs_four_vcpu_and_sixteen_gib(cpu, gib, ok):
    values = {"gpu": True, "cpu": cpu, "memory": f"{gib}Gi", "cpu_idle": False}
    if ok:
        assert EndpointSettings(**values).gpu
    else:
        with pytest.raises(ValidationError, match="gpu needs cpu >= 4 and memory >= 16Gi"):
            EndpointSettings(**values)


def test_min_instances_equal_to_max_is_fine_one_more_is_not():
    assert EndpointSettings(min_instances=10, max_instances=10).min_instances == 10
    with pytest.raises(ValidationError, match=r"min_instances \(11\) is greater than max_instances \(10\)"):
        EndpointSettings(min_instances=11, max_instances=10)


@pytest.mark.parametrize(("settings", "ok"), [({"cpu": 8, "memory": "32Gi"}, True),
                                              ({"cpu": 8, "memory": "2Gi"}, False),
                                              ({"cpu": 6, "memory": "32Gi"}, False)])
def test_the_plan_applies_the_table_to_the_larger_cpu_counts(settings, ok):
    """Through `fleet plan`: an accepted pair is planned as Cloud Run's limits; a refused one is one message naming
    the stack file and the model, exit 2."""
    model = {"name": "big", "file": "models/demo-e2e.onnx", "regions": ["us-central1"], "settings": settings}
    overrides = {"yolo-fleet:models": json.dumps([model])}
    if ok:
        plan = evaluate("dev", config_overrides=overrides)
        [service] = [r for r in plan.custom("gcp:cloudrunv2/service:Service") if r.name == "big-iowa"]
        assert service.inputs["template"]["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "32Gi"}
        return
    with pytest.raises(FleetError, match=r"Pulumi\.dev\.yaml"):
        evaluate("dev", config_overrides=overrides)
