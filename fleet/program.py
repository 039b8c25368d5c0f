"""Evaluate the real Pulumi program (`__main__.py`) offline under mocks: the plan `pulumi up` would apply."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import json
import runpy
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.stack import Stack, wait_for_rpcs

from components.catalog import Catalog, load_catalog, read_yaml
from components.errors import PROJECT_DIR as PROJECT_DIR  # re-exported: the CLI and the tests take it from here
from components.errors import FleetError
from components.layout import FleetLayout, plan_fleet
from components.stack_config import NAMESPACE, ConfigError, StackConfig, stack_config_from_values
from fleet.mocks import RecordedResource, RecordingMonitor

# Type tokens the CLI and the policy pack look for in a plan.
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
PLAN_STOPPED = "the program stopped before declaring anything"  # the note evaluate() adds to its FleetErrors
COMPONENT_PREFIX = f"{NAMESPACE}:"  # the program's component resources: groupings, nothing created in the project
# How a secret value travels in resource inputs (pulumi.runtime.rpc's special signature).
SECRET_SIG_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


@dataclass
class Plan:
    stack: str
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    invokes: list[str] = field(default_factory=list)  # data sources called (gcp:organizations/getProject:...)

    def custom(self, type_token: str | None = None) -> list[RecordedResource]:
        return [r for r in self.resources if r.custom and (type_token is None or r.type == type_token)]

    def to_json(self, show_secrets: bool = False) -> dict[str, Any]:
        """The plan as `fleet plan --json` prints it: secret inputs masked unless ``show_secrets``."""
        return {"stack": self.stack,
                "resources": [{"type": r.type, "name": r.name, "inputs": r.inputs if show_secrets else redact(r.inputs)}
                              for r in self.resources],
                "outputs": self.outputs}


def redact(value: Any) -> Any:
    """Hide secret inputs (registry tokens, secret payloads) from printed plans."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return "[secret]"
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def stack_config(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """Pulumi.<stack>.yaml's config as Pulumi hands it to a program: strings, JSON for structured values."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(p.name.split(".")[1] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(f"{path.name}: no such stack file; stacks here: {', '.join(stacks) or 'none'}")
    data = read_yaml(path, ConfigError) or {}
    config = data.get("config") or {} if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"{path.name}: expected a 'config:' mapping")
    out = {}
    for key, value in config.items():
        full = key if ":" in key else f"{NAMESPACE}:{key}"
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


@dataclass(frozen=True)
class StackLayout:
    """A stack's validated config, its catalog and what runs where: everything short of declaring resources."""

    config: StackConfig
    catalog: Catalog
    layout: FleetLayout


def stack_layout(stack: str, project_dir: Path = PROJECT_DIR, catalog: str | Path | None = None,
                 config: dict[str, str] | None = None) -> StackLayout:
    """Pulumi.<stack>.yaml (or `config`, standing in for it) and its catalog (or `catalog`) resolved by `plan_fleet`,
    the function `__main__.py` declares its services from; FleetError names the file and field at fault."""
    parsed = stack_config_from_values(config if config is not None else stack_config(stack, project_dir), stack)
    loaded = load_catalog(Path(catalog) if catalog else project_dir / parsed.catalog)
    return StackLayout(parsed, loaded, plan_fleet(loaded, parsed, f"Pulumi.{stack}.yaml", stack))


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector while a program is declared. A prod plan allocates some 300,000 objects that
    outlive it (pulumi_gcp's classes) or live until it returns (resources, Outputs), and each of the half-dozen
    full collections it would trigger walks them all to find almost nothing (~0.4 s each). Reference counting
    frees objects as usual meanwhile, and the collector frees the plan's cycles once it runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _resolve(value: Any) -> Any:
    return await pulumi.Output.from_input(value).future()


def _evaluate(stack: str, config: dict[str, str], project_dir: Path) -> Plan:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        monitor = RecordingMonitor()
        pulumi.runtime.set_all_config(config)
        pulumi.runtime.set_mocks(monitor.mocks, project="yolo-fleet", stack=stack, preview=False, monitor=monitor)
        root = pulumi.runtime.get_root_resource()
        assert isinstance(root, Stack), "set_mocks declares the stack every resource belongs to"
        sys.path.insert(0, str(project_dir))
        try:
            runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")
            loop.run_until_complete(wait_for_rpcs())
        except pulumi.RunError as error:
            loop.run_until_complete(wait_for_rpcs())  # let the stack's own registration finish quietly
            raise FleetError(str(error)) from None
        except Exception:
            # A bug in the program: settle what it had registered while its loop is open, or the next evaluation in
            # this process awaits those tasks on a closed loop ("Event loop is closed") and fails whatever it plans.
            with contextlib.suppress(Exception):
                loop.run_until_complete(wait_for_rpcs())
            raise
        finally:
            sys.path.remove(str(project_dir))
        outputs = {k: loop.run_until_complete(_resolve(v)) for k, v in root.outputs.items()}
        resources = sorted(monitor.mocks.resources, key=lambda r: (r.type, r.name))  # registration order varies
        return Plan(stack, resources, outputs, sorted(set(monitor.mocks.invokes)))
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def evaluate(stack: str, catalog: str | Path | None = None, project_dir: Path = PROJECT_DIR,
             config_overrides: dict[str, str] | None = None, config: dict[str, str] | None = None) -> Plan:
    """Run `__main__.py` for `stack` under mocks; FleetError on any catalog or config mistake.

    `config` (as `stack_config` returns it) stands in for Pulumi.<stack>.yaml, so any stack name can be
    planned without a file. Each evaluation runs in a fresh context (its own root stack, config and event
    loop), so one process can plan several stacks or catalogs.
    """
    try:
        config = dict(config) if config is not None else stack_config(stack, project_dir)
        if catalog is not None:
            config[f"{NAMESPACE}:catalog"] = str(Path(catalog).resolve())
        config.update(config_overrides or {})
        with _without_cyclic_gc():
            return contextvars.Context().run(_evaluate, stack, config, project_dir)
    except FleetError as error:
        error.add_note(PLAN_STOPPED)
        raise


def stopped_plan(error: FleetError) -> bool:
    """Whether ``error`` stopped a program's evaluation, so nothing was declared (the CLI says so only then)."""
    return PLAN_STOPPED in getattr(error, "__notes__", ())
