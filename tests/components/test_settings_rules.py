"""Cloud Run's limits as components/settings.py checks them: both sides of every cpu/memory bound, the GPU shape,
and how overrides merge. A wrong bound here is a plan that fails at a user's `pulumi up`, or a valid shape refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from components.settings import (
    CPU_CHOICES,
    MAX_MEMORY_GIB_FOR_CPU,
    MEMORY_CHOICES_GIB,
    MIN_MEMORY_GIB_FOR_CPU,
    EndpointSettings,
    SettingsOverride,
    memory_gib,
    merge,
)

ALLOWED = "2Gi, 4Gi, 8Gi, 16Gi, 24Gi, 32Gi"


def refused(message: str, **values: object) -> None:
    with pytest.raises(ValidationError) as e:
        EndpointSettings(**values)
    assert message in str(e.value)


def test_the_table_is_cloud_runs() -> None:
    """Cloud Run docs "Memory limits": 1 vCPU up to 4Gi, 2 up to 8, 4 up to 16, 6 up to 24, 8 up to 32; 6+ need 4Gi."""
    assert CPU_CHOICES == (1, 2, 4, 6, 8)
    assert MAX_MEMORY_GIB_FOR_CPU == {1: 4, 2: 8, 4: 16, 6: 24, 8: 32}
    assert MIN_MEMORY_GIB_FOR_CPU == {1: 2, 2: 2, 4: 2, 6: 4, 8: 4}


@pytest.mark.parametrize("cpu", CPU_CHOICES)
def test_every_cpu_count_takes_memory_up_to_its_bound_and_not_one_size_over(cpu: int) -> None:
    top = MAX_MEMORY_GIB_FOR_CPU[cpu]
    assert EndpointSettings(cpu=cpu, memory=f"{top}Gi").memory_gib == top
    over = [m for m in MEMORY_CHOICES_GIB if m > top]
    if over:
        refused(f"memory {over[0]}Gi needs more vCPU: cpu {cpu} allows at most {top}Gi", cpu=cpu, memory=f"{over[0]}Gi")


@pytest.mark.parametrize("cpu", CPU_CHOICES)
def test_every_cpu_count_takes_memory_down_to_its_bound_and_not_one_size_under(cpu: int) -> None:
    bottom = MIN_MEMORY_GIB_FOR_CPU[cpu]
    assert EndpointSettings(cpu=cpu, memory=f"{bottom}Gi").memory_gib == bottom
    under = [m for m in MEMORY_CHOICES_GIB if m < bottom]
    if under:
        refused(f"cpu {cpu} needs at least {bottom}Gi of memory (got {under[-1]}Gi)", cpu=cpu, memory=f"{under[-1]}Gi")


@pytest.mark.parametrize("cpu", [0, 3, 5, 7, 16])
def test_a_cpu_count_cloud_run_does_not_offer_is_refused_with_the_choices(cpu: int) -> None:
    refused(f"cpu must be one of 1, 2, 4, 6, 8 (got {cpu})", cpu=cpu, memory="4Gi")
    with pytest.raises(ValidationError, match=f"cpu must be one of 1, 2, 4, 6, 8 \\(got {cpu}\\)"):
        SettingsOverride(cpu=cpu)


@pytest.mark.parametrize("value", ["4Gi", "32Gi", "2Gi"])
def test_memory_sizes_read_as_gib(value: str) -> None:
    assert memory_gib(value) == int(value[:-2])


@pytest.mark.parametrize("value", ["3Gi", "4G", "4gi", "Gi", "-4Gi", "4 Gi", "4096Mi", "64Gi", 4, None])
def test_other_memory_values_are_refused_with_the_allowed_sizes(value: object) -> None:
    with pytest.raises(ValueError) as e:
        memory_gib(value)  # type: ignore[arg-type]
    assert str(e.value) == f"memory must be one of {ALLOWED} (got {value!r})"
    with pytest.raises(ValidationError, match="memory must be one of"):
        SettingsOverride(memory=value) if value is not None else EndpointSettings(memory=value)


def test_min_instances_may_equal_max_instances_but_not_exceed_it() -> None:
    assert EndpointSettings(min_instances=3, max_instances=3).min_instances == 3
    refused("min_instances (4) is greater than max_instances (3)", min_instances=4, max_instances=3)


def test_a_gpu_needs_four_vcpu_sixteen_gib_and_instance_billing() -> None:
    shape = EndpointSettings(gpu=True, cpu=4, memory="16Gi", cpu_idle=False)
    assert shape.gpu and shape.cpu == 4 and shape.memory_gib == 16
    message = "gpu needs cpu >= 4 and memory >= 16Gi"
    refused(f"{message} (got cpu 4, memory 8Gi)", gpu=True, cpu=4, memory="8Gi", cpu_idle=False)
    refused(f"{message} (got cpu 2, memory 8Gi)", gpu=True, cpu=2, memory="8Gi", cpu_idle=False)
    refused("gpu needs cpu_idle: false", gpu=True, cpu=4, memory="16Gi", cpu_idle=True)
    # without a GPU, cpu_idle and a small shape are fine
    assert EndpointSettings(cpu=1, memory="2Gi", cpu_idle=True).cpu_idle


@pytest.mark.parametrize("seconds", [60, 120, 86400])
def test_alert_durations_in_whole_minutes_pass(seconds: int) -> None:
    assert EndpointSettings(alert_duration_seconds=seconds).alert_duration_seconds == seconds
    assert SettingsOverride(alert_duration_seconds=seconds).changes() == {"alert_duration_seconds": seconds}


@pytest.mark.parametrize("seconds", [61, 90, 3599])
def test_alert_durations_off_the_minute_are_refused(seconds: int) -> None:
    message = f"alert_duration_seconds must be a multiple of 60 (got {seconds})"
    refused(message, alert_duration_seconds=seconds)
    with pytest.raises(ValidationError, match=message.replace("(", "\\(").replace(")", "\\)")):
        SettingsOverride(alert_duration_seconds=seconds)


def test_an_empty_value_in_an_override_names_every_empty_key() -> None:
    with pytest.raises(ValidationError) as e:
        SettingsOverride.model_validate({"cpu": 2, "min_instances": None, "memory": None})
    assert "min_instances, memory: empty value; give one, or remove the key to inherit it" in str(e.value)
    assert SettingsOverride.model_validate({"cpu": 2}).changes() == {"cpu": 2}


def test_an_override_changes_only_what_it_sets() -> None:
    assert SettingsOverride().changes() == {}
    assert SettingsOverride(cpu=4, memory="8Gi", public=False).changes() == {"cpu": 4, "memory": "8Gi",
                                                                              "public": False}


def test_merge_applies_overrides_in_order_last_wins_and_keeps_the_rest() -> None:
    base = EndpointSettings()
    merged = merge(base, SettingsOverride(cpu=4, memory="8Gi", min_instances=1),
                   SettingsOverride(memory="16Gi"), SettingsOverride(min_instances=0, concurrency=8))
    assert (merged.cpu, merged.memory, merged.min_instances, merged.concurrency) == (4, "16Gi", 0, 8)
    assert merged.timeout_seconds == base.timeout_seconds and merged.max_instances == base.max_instances


def test_merge_checks_the_combination_the_layers_make_together() -> None:
    """Each layer alone is valid; the merged shape (1 vCPU with 8Gi) is not."""
    with pytest.raises(ValidationError, match="memory 8Gi needs more vCPU: cpu 1 allows at most 4Gi"):
        merge(EndpointSettings(), SettingsOverride(memory="8Gi"), SettingsOverride(cpu=1))
