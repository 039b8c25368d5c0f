"""`fleet plan --explain REGION`: the value of each setting of each service there and the layer that set it,
and one line with exit 2 for a region it cannot explain."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.cli import main
from fleet.explain import explain
from fleet.program import stack_config, stack_layout
from tests.conftest import deployable, region_entry


def explained(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def row(services: dict[str, Any], service: str, setting: str) -> dict[str, Any]:
    return next(r for r in services[service] if r["setting"] == setting)


def test_dev_says_its_forced_min_instances_beat_the_region_override(capsys):
    out = explained(capsys, "--stack", "dev", "--explain", "us-central1")
    assert (out["stack"], out["region"]) == ("dev", "us-central1")
    assert set(out["services"]) == {"demo-iowa", "demo-raw-iowa", "shared-iowa"}
    warm = row(out["services"], "demo-iowa", "min_instances")
    assert (warm["value"], warm["layer"], warm["source"]) == (
        0, "forced", "Pulumi.dev.yaml: yolo-fleet:forced_settings")
    assert warm["beats"] == [{"layer": "region override", "source": "regions.yaml: regions[us-central1].overrides",
                              "value": 1}]
    cpu = row(out["services"], "demo-iowa", "cpu")
    assert (cpu["value"], cpu["layer"]) == (1, "stack setting")
    concurrency = row(out["services"], "shared-iowa", "concurrency")
    assert (concurrency["value"], concurrency["layer"], concurrency["source"]) == (
        8, "catalog shared setting", "regions.yaml: shared.settings")
    assert row(out["services"], "demo-iowa", "gpu")["layer"] == "built-in default"


def test_prod_region_override_is_what_sets_iowa_warm_and_the_text_table_says_so(capsys):
    out = explained(capsys, "--stack", "prod", "--explain", "iowa")  # a city works as well as the id
    assert explained(capsys, "--stack", "prod", "--explain", "St. Ghislain")["region"] == "europe-west1", \
        "as the header prints it"
    warm = row(out["services"], "demo-iowa", "min_instances")
    assert (warm["value"], warm["layer"]) == (1, "region override")
    assert main(["plan", "--stack", "prod", "--explain", "us-central1"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("min_instances"))
    assert line.split()[:4] == ["min_instances", "1", "region", "override"]
    assert "regions.yaml: regions[us-central1].overrides" in line


def test_explain_follows_an_edited_catalog(capsys, write_catalog):
    path = write_catalog(lambda d: region_entry(d, "us-east1").update(overrides={"max_instances": 3}))
    out = explained(capsys, "--catalog", str(path), "--explain", "us-east1")
    assert row(out["services"], "demo-south-carolina", "max_instances")["value"] == 3


@pytest.mark.parametrize(("region", "message"), [
    ("us-wset1", "fleet plan: --explain us-wset1: no such region in regions.yaml; did you mean us-west1"),
    ("", "fleet plan: --explain : no such region in regions.yaml"),  # not the plan, as if it were not given
    ("europe-north1", "fleet plan: --explain europe-north1: stack dev runs no service in europe-north1: no model"),
])
def test_a_region_it_cannot_explain_is_one_line_and_exit_2(capsys, region, message):
    assert main(["plan", "--stack", "dev", "--explain", region]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1


def test_a_disabled_region_is_named_as_such(capsys, write_catalog):
    path = write_catalog(lambda d: region_entry(d, "us-east1").update(enabled=False))
    assert main(["plan", "--catalog", str(path), "--explain", "us-east1"]) == 2
    assert "us-east1: it is disabled in regions.yaml (enabled: false)" in capsys.readouterr().err


def test_a_cpu_service_beats_only_layers_below_it_that_apply(capsys):
    out = explained(capsys, "--stack", "dev", "--explain", "us-central1")
    cpu = row(out["services"], "demo-iowa", "cpu")
    assert [(b["layer"], b["value"]) for b in cpu["beats"]] == [("catalog default", 2)], \
        "the catalog's gpu_defaults never applied to a CPU service: nothing beat them"
    assert row(out["services"], "demo-iowa", "concurrency")["beats"] == [], "gpu_defaults sit above catalog defaults"
    assert main(["plan", "--stack", "dev", "--explain", "us-central1"]) == 0
    order = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("demo-iowa "))
    assert order.endswith("built-in default < catalog default < stack setting < region override < model setting "
                          "< forced")


def test_a_gpu_service_says_which_stack_settings_its_gpu_defaults_beat():
    model = {"name": "big", "regions": ["us-central1"], "settings": {"gpu": True, "concurrency": 8}}
    facts = stack_layout("dev", config={**stack_config("dev"), **deployable("dev"),  # dev's settings: cpu 1, 2Gi
                                        "yolo-fleet:models": json.dumps([model]), "yolo-fleet:forced_settings": "{}"})
    rows = {r["setting"]: r for r in explain(facts.layout, facts.catalog.region("us-central1"))["big-iowa"]}
    assert (rows["cpu"]["value"], rows["cpu"]["layer"]) == (4, "catalog gpu default")
    assert [(b["layer"], b["value"]) for b in rows["cpu"]["beats"]] == [("catalog default", 2), ("stack setting", 1)]
    assert (rows["concurrency"]["value"], rows["concurrency"]["layer"]) == (8, "model setting")
    assert [(b["layer"], b["value"]) for b in rows["concurrency"]["beats"]] == [
        ("catalog default", 4), ("catalog gpu default", 16)]


def test_a_gpu_services_max_instances_fitted_to_the_quota_says_so():
    """gpu_defaults say 3, the project's GPU quota (0 until requested) leaves 1: the row names the quota."""
    model = {"name": "big", "regions": ["us-central1"], "settings": {"gpu": True}}
    facts = stack_layout("dev", config={**stack_config("dev"), **deployable("dev"),
                                        "yolo-fleet:models": json.dumps([model]), "yolo-fleet:forced_settings": "{}"})
    row = next(r for r in explain(facts.layout, facts.catalog.region("us-central1"))["big-iowa"]
               if r["setting"] == "max_instances")
    assert (row["value"], row["layer"]) == (1, "fitted to the GPU quota")
    assert row["source"].startswith("yolo-fleet:gpu_quota_per_region")
    assert row["beats"][0] == {"layer": "catalog gpu default", "source": "regions.yaml: gpu_defaults", "value": 3}
