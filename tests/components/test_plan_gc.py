"""Planning runs without the cycle collector (each full collection would walk every object of the plan, about a
second of a prod plan's time), and gives it back to whoever planned as it found it."""

from __future__ import annotations

import gc
import json
import sys
import tomllib

import pytest

from components.errors import FleetError
from fleet import cli
from fleet.mocks import FleetMocks
from fleet.program import PROJECT_DIR, evaluate

ONE_ENDPOINT = {"yolo-fleet:models": json.dumps([{"name": "demo", "file": "models/demo-e2e.onnx",
                                                  "regions": ["us-central1"]}])}


def test_resources_are_declared_with_the_collector_paused_and_it_runs_again_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    collector_on: list[bool] = []
    declare = FleetMocks.new_resource

    def recording(self: FleetMocks, args: object) -> object:
        collector_on.append(gc.isenabled())
        return declare(self, args)  # type: ignore[arg-type]

    monkeypatch.setattr(FleetMocks, "new_resource", recording)
    plan = evaluate("dev", config_overrides=ONE_ENDPOINT)
    assert [r.name for r in plan.custom("gcp:cloudrunv2/service:Service")][:1] == ["demo-iowa"]
    assert collector_on and not any(collector_on), "the collector ran while resources were declared"
    assert gc.isenabled(), "the collector is on again once the plan is returned"


def test_the_collector_is_given_back_when_the_program_stops_on_a_mistake() -> None:
    with pytest.raises(FleetError):
        evaluate("dev", catalog="does-not-exist.yaml")
    assert gc.isenabled()


def test_a_caller_that_had_paused_the_collector_keeps_it_paused() -> None:
    gc.disable()
    try:
        with pytest.raises(FleetError):
            evaluate("dev", catalog="does-not-exist.yaml")
        assert not gc.isenabled(), "planning turned on a collector its caller had turned off"
    finally:
        gc.enable()


@pytest.mark.parametrize(("command", "collector_on"), [("plan", False), ("diff", False), ("monitor", True),
                                                        ("logs", True), ("rollout", True)])
def test_the_fleet_program_runs_one_shot_commands_without_the_collector(
        monkeypatch: pytest.MonkeyPatch, command: str, collector_on: bool) -> None:
    """A command that plans and exits skips the collection re-enabling would cost; long-lived ones keep it."""
    seen: list[bool] = []
    monkeypatch.setattr(sys, "argv", ["fleet", command, "--stack", "dev"])
    monkeypatch.setattr(cli, "main", lambda: seen.append(gc.isenabled()) or 0)
    try:
        assert cli.run() == 0
    finally:
        gc.enable()
    assert seen == [collector_on]


def test_the_console_script_is_the_fleet_program() -> None:
    scripts = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fleet"] == "fleet.cli:run"
