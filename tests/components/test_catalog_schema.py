"""The catalog's JSON schema (regions.schema.json): generated from the pydantic models, committed, named by
regions.yaml for editors, and it accepts the real catalog while refusing the edits the models refuse."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from components.catalog import CatalogError, load_catalog
from fleet.docs import REGENERATE, SCHEMA_FILE, catalog_schema
from fleet.program import PROJECT_DIR
from tests.conftest import region_entry

CATALOG = PROJECT_DIR / "regions.yaml"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads((PROJECT_DIR / SCHEMA_FILE).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_committed_schema_is_what_the_models_generate():
    assert (PROJECT_DIR / SCHEMA_FILE).read_text() == catalog_schema(), \
        f"{SCHEMA_FILE} is stale: run `{REGENERATE}` and commit the result"


def test_regions_yaml_names_the_schema_for_the_yaml_language_server():
    first = CATALOG.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, "the modeline is regions.yaml's first line"
    assert (CATALOG.parent / match.group(1)).resolve() == (PROJECT_DIR / SCHEMA_FILE).resolve()


def test_the_real_catalog_is_valid(validator, catalog_data):
    assert [e.message for e in validator.iter_errors(catalog_data)] == []


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = next(r for r in node if r["id"] == key) if isinstance(node, list) else node[key]
        node[path[-1]] = value
    return mutate


WRONG = [  # (what, mutation): each an edit a user could make, each refused by the model too
    ("unknown key in a region's overrides", _set(("regions", "us-east1", "overrides"), {"min_instance": 1})),
    ("unknown key in a region", _set(("regions", "us-east1", "gpu"), True)),
    ("unknown top-level key", _set(("default",), {"cpu": 2})),
    ("wrong type", _set(("defaults", "max_instances"), "ten")),
    ("cpu Cloud Run does not offer", _set(("defaults", "cpu"), 3)),
    ("memory Cloud Run does not offer", _set(("shared", "settings", "memory"), "3Gi")),
    ("unknown region id", _set(("regions", "us-east1", "id"), "us-east9")),
    ("unknown geography", _set(("regions", "us-east1", "geography"), "antarctica")),
    ("ingress Cloud Run does not know", _set(("regions", "us-central1", "overrides"), {"ingress": "public"})),
    ("concurrency over Cloud Run's limit", _set(("defaults", "concurrency"), 1001)),
    ("required field missing", lambda d: region_entry(d, "us-east1").pop("tier")),
]


@pytest.mark.parametrize(("what", "mutate"), WRONG, ids=[w for w, _ in WRONG])
def test_an_obviously_wrong_edit_fails_the_schema_and_the_model(validator, catalog_data, write_catalog, what, mutate):
    data = copy.deepcopy(catalog_data)
    mutate(data)
    assert list(validator.iter_errors(data)), f"the schema accepts a catalog with an {what}"
    with pytest.raises(CatalogError):
        load_catalog(write_catalog(mutate))


def test_settings_in_the_schema_carry_their_descriptions_and_choices():
    schema = json.loads(catalog_schema())
    override = schema["$defs"]["SettingsOverride"]["properties"]
    assert override["cpu"]["enum"] == [1, 2, 4, 6, 8]
    assert "memory per instance" in override["memory"]["description"]
    assert all(p.get("description") for p in override.values()), "every setting is described for editors"
    assert "default" not in override["cpu"], "an override has no default: unset means inherit"


def test_the_stock_catalog_still_loads(catalog_data):
    assert yaml.safe_load(CATALOG.read_text()) == catalog_data
    assert len(load_catalog(CATALOG).regions) == 43
