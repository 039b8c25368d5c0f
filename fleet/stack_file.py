"""Edit one model entry of Pulumi.<stack>.yaml in place, keeping its comments and layout (ruamel.yaml round
trip), as `fleet rollout` moves a model from wave to wave: the file stays the reviewed source of truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from components.errors import FleetError
from components.stack_config import NAMESPACE

MODELS_KEY = f"{NAMESPACE}:models"


def _entry(models: Any, model: str, where: str) -> Any:
    for entry in models or []:
        if isinstance(entry, dict) and entry.get("name") == model:
            return entry
    raise FleetError(f"{where}: {MODELS_KEY}: no model named '{model}'")


def set_model(entry: Any, file: str, rollout: dict[str, Any] | None) -> None:
    """`file`, and `rollout` (None: no rollout key at all), on one model entry, other keys untouched."""
    entry["file"] = file
    if rollout is None:
        entry.pop("rollout", None)
    else:
        entry["rollout"] = rollout


def edited_values(values: dict[str, str], model: str, file: str, rollout: dict[str, Any] | None,
                  where: str) -> dict[str, str]:
    """Config values as Pulumi hands them over (`fleet.program.stack_config`), with the model entry edited."""
    models = json.loads(values.get(MODELS_KEY, "[]"))
    set_model(_entry(models, model, where), file, rollout)
    return {**values, MODELS_KEY: json.dumps(models)}


def write_model(path: Path, model: str, file: str, rollout: dict[str, Any] | None) -> None:
    """Rewrite `path` with the model entry edited; comments and the other entries stay as they are."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(path.read_text())
    config = data.get("config") if isinstance(data, dict) else None
    models = config.get(MODELS_KEY, config.get("models")) if isinstance(config, dict) else None
    set_model(_entry(models, model, path.name), file, rollout)
    with path.open("w") as out:
        yaml.dump(data, out)
