"""One error type for every mistake in the catalog or stack config, rendered for people, not tracebacks."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the repository: Pulumi.yaml, regions.yaml, models/


class FleetError(Exception):
    """A mistake in user input (catalog, stack config): the message says where and how to fix it."""


def file_label(path: str | Path) -> str:
    """A file as messages name it: relative to the project when in it (`regions.yaml`, `fleet/prices.yaml`, however
    the program was given it), else as given. Symlinks are not followed: the name is the one the user wrote."""
    absolute = Path(os.path.normpath(Path(path).absolute()))  # `..` folded by text: symlinks stay as written
    return str(absolute.relative_to(PROJECT_DIR)) if absolute.is_relative_to(PROJECT_DIR) else str(path)


def _known_fields(models: Iterable[type[BaseModel]]) -> set[str]:
    fields: set[str] = set()
    for model in models:
        fields.update(model.model_fields)
    return fields


def _where(loc: Sequence[str | int], data: Any) -> str:
    """('regions', 3, 'overrides', 'cpu') -> 'regions[us-east4].overrides.cpu' using the entry's id or name."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            label = str(key)
            entry = node[key] if isinstance(node, Sequence) and not isinstance(node, str) and key < len(node) else None
            if isinstance(entry, Mapping):
                label = str(entry.get("id") or entry.get("name") or key)
            parts.append(f"[{label}]")
        else:
            parts.append(("." if parts else "") + key)
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            node = None
    return "".join(parts)


def describe(source: str, error: ValidationError, data: Any, models: Iterable[type[BaseModel]]) -> str:
    """Render every pydantic error as one line: '<file>: <entry.field>: <what is wrong>'."""
    fields = _known_fields(models)

    def line(loc: Sequence[str | int], text: str) -> str:
        where = _where(loc, data)
        return f"{source}: {where}: {text}" if where else f"{source}: {text}"

    lines = []
    for err in error.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]  # drop union branch tags
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            guess = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            lines.append(line(loc[:-1], f"unknown key '{key}'{hint}"))
            continue
        if err["type"] == "missing":
            lines.append(line(loc, "required field is missing"))
            continue
        if err["type"] not in ("value_error", "assertion_error") and "input" in err:
            msg = f"{msg} (got {err['input']!r})"
        if err["type"] == "literal_error" and isinstance(err.get("input"), str):
            choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            close = difflib.get_close_matches(err["input"], choices, n=1)
            msg += f"; did you mean '{close[0]}'?" if close else ""
        lines.append(line(loc, msg))
    return "\n".join(dict.fromkeys(lines))
