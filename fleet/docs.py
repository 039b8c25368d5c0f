"""Files generated from the pydantic models, so a setting's description and allowed values are written once: the
catalog's JSON schema (`regions.schema.json`, which regions.yaml names for editors) and the README's settings
tables (between `<!-- NAME:start -->` and `<!-- NAME:end -->`).

`python -m fleet.docs` (`make docs`) rewrites what is stale; `--check` only names it, exit 1. The tests compare
the same way, so a model changed without its generated files fails them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from components.catalog import Catalog
from components.errors import PROJECT_DIR
from components.settings import EndpointSettings
from inference_service.settings import ServerSettings, flag

SCHEMA_FILE = "regions.schema.json"
README = "README.md"
REGENERATE = "make docs"  # what a stale file's message tells you to run (`python -m fleet.docs` without make)
# README section -> the model whose fields its table lists. A model with an `env_prefix` (pydantic-settings) is
# listed by environment variable.
TABLES: dict[str, type[BaseModel]] = {"settings": EndpointSettings, "server-settings": ServerSettings}
FLAGS: dict[str, Callable[[str], str]] = {"server-settings": flag}  # tables of settings that are flags too


class MarkerMissing(Exception):
    """A README marker is missing: the generated table has nowhere to go."""


def catalog_schema() -> str:
    """The JSON schema of regions.yaml (draft 2020-12, as pydantic writes it)."""
    schema = Catalog.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
              "title": "yolo-fleet region catalog (regions.yaml)"}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _yaml(value: Any) -> str:
    """A value as it is written in YAML: true, 4Gi, 0.05, none."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def allowed(prop: dict[str, Any]) -> str:
    """What a field's JSON schema allows, in words: '1, 2, 4', '1-1000', '> 0, <= 1', 'true, false'."""
    if "anyOf" in prop:
        return " or ".join(allowed(alternative) for alternative in prop["anyOf"])
    if "enum" in prop or "const" in prop:
        return ", ".join(_yaml(v) for v in prop.get("enum", [prop.get("const")]))
    if prop.get("type") == "boolean":
        return "true, false"
    if prop.get("type") == "null":
        return "none"
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f"{low}-{high}"
    bounds = [f"{op} {prop[key]}" for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="),
                                                  ("exclusiveMaximum", "<"), ("maximum", "<=")) if key in prop]
    return ", ".join(bounds) or str(prop.get("type", "any"))


def settings_table(model: type[BaseModel], flag_of: Callable[[str], str] | None = None) -> str:
    """A Markdown table of `model`'s fields: name (or environment variable), its command-line flag (with
    `flag_of`), default, allowed values, description."""
    schema = model.model_json_schema()
    prefix = model.model_config.get("env_prefix")
    header = ["setting", *(["flag"] if flag_of else []), "default", "allowed", "what it does"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, prop in schema["properties"].items():
        key = f"{prefix}{name}".upper() if prefix is not None else name
        field = model.model_fields.get(name)
        derived = field is not None and not field.is_required()  # a default_factory or one computed from others
        default = _yaml(prop["default"]) if "default" in prop else "see text" if derived else "required"
        description = prop.get("description", "").replace("|", "\\|")
        cells = [f"`{key}`", *([f"`{flag_of(name)}`"] if flag_of else []), default, allowed(prop), description]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def with_section(text: str, name: str, body: str) -> str:
    """`text` with what lies between `<!-- name:start -->` and `<!-- name:end -->` replaced by `body`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise MarkerMissing(f"{README}: needs exactly one '{start}' line and one '{end}' line after it, around the "
                        f"table generated from {TABLES[name].__name__}")
    before, rest = text.split(start)
    return f"{before}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"


def generated(project_dir: Path = PROJECT_DIR) -> dict[Path, str]:
    """Each generated file's path -> the content the models give it now."""
    readme = (project_dir / README).read_text(encoding="utf-8")
    for name, model in TABLES.items():
        readme = with_section(readme, name, settings_table(model, FLAGS.get(name)))
    return {project_dir / SCHEMA_FILE: catalog_schema(), project_dir / README: readme}


def stale(project_dir: Path = PROJECT_DIR) -> list[Path]:
    """The generated files whose committed content differs from what the models give."""
    return [path for path, content in generated(project_dir).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != content]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say what is stale; exit 1 if anything is")
    args = parser.parse_args(argv)
    try:
        outdated = stale()
        if args.check:
            for path in outdated:
                print(f"{path.name} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1 if outdated else 0
        for path, content in generated().items():
            if path in outdated:
                path.write_text(content, encoding="utf-8")
                print(f"wrote {path.name}")
    except MarkerMissing as error:
        print(f"fleet.docs: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
