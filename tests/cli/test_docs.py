"""fleet/docs.py: the README's settings table is the models' descriptions, generated for any pydantic model, and
a model changed without regenerating is caught."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from components.catalog import Catalog, Region, SharedSpec
from components.settings import EndpointSettings
from fleet import docs
from fleet.program import PROJECT_DIR


def test_the_readme_and_the_schema_are_what_the_models_generate():
    assert docs.stale() == [], f"run `{docs.REGENERATE}` and commit the result"


def test_the_readme_settings_table_lists_every_setting_with_its_description():
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme.split("<!-- settings:start -->")[1].split("<!-- settings:end -->")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(EndpointSettings.model_fields)
    cpu = next(r for r in rows if r.startswith("| `cpu`"))
    assert cpu == "| `cpu` | 2 | 1, 2, 4, 6, 8 | vCPUs per instance |"


@pytest.mark.parametrize("model", [EndpointSettings, Catalog, Region, SharedSpec])
def test_every_catalog_field_has_a_description(model: type[BaseModel]):
    assert [n for n, f in model.model_fields.items() if not f.description] == []


class Knobs(BaseModel):
    """A model the generator has never seen: any pydantic model gets a table."""

    model_config = ConfigDict(env_prefix="srv_")

    port: int = Field(8080, ge=1, le=65535, description="where it listens")
    mode: Literal["dedicated", "shared"] = Field("dedicated", description="one model | many tenants")
    ratio: float = Field(0.5, gt=0, le=1, description="a share")
    key_file: str | None = Field(None, description="digests")
    name: str = Field(description="required")


def test_any_model_gets_a_table_by_environment_variable_when_it_has_a_prefix():
    assert docs.settings_table(Knobs).splitlines() == [
        "| setting | default | allowed | what it does |",
        "|---|---|---|---|",
        "| `SRV_PORT` | 8080 | 1-65535 | where it listens |",
        "| `SRV_MODE` | dedicated | dedicated, shared | one model \\| many tenants |",
        "| `SRV_RATIO` | 0.5 | > 0, <= 1 | a share |",
        "| `SRV_KEY_FILE` | none | string or none | digests |",
        "| `SRV_NAME` | required | string | required |",
    ]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("README.md", docs.SCHEMA_FILE):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    return tmp_path


def test_a_changed_description_or_a_hand_edited_table_is_stale(project: Path, monkeypatch):
    assert docs.stale(project) == []
    readme = project / "README.md"
    readme.write_text(readme.read_text().replace("| vCPUs per instance |", "| vCPUs |"))
    assert docs.stale(project) == [readme]
    readme.write_text(docs.generated(project)[readme])
    assert docs.stale(project) == []

    class Renamed(Catalog):
        """The catalog under another description."""

    monkeypatch.setattr(docs, "Catalog", Renamed)
    monkeypatch.setitem(docs.TABLES, "settings", Knobs)
    assert set(docs.stale(project)) == {readme, project / docs.SCHEMA_FILE}, "a changed model makes both stale"


def test_missing_markers_are_named(project: Path):
    readme = project / "README.md"
    readme.write_text(readme.read_text().replace("<!-- settings:end -->", ""))
    with pytest.raises(docs.MarkerMissing, match="<!-- settings:end -->"):
        docs.generated(project)


def test_the_server_settings_table_gives_each_settings_real_flag():
    """The flag column is what `python -m inference_service` parses: MODEL_PATH is --model, not --model-path."""
    from inference_service.__main__ import _parser
    from inference_service.settings import ServerSettings

    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme.split("<!-- server-settings:start -->")[1].split("<!-- server-settings:end -->")[0]
    rows = {r.split("`")[1]: r.split("`")[3] for r in section.splitlines() if r.startswith("| `")}
    assert list(rows) == [name.upper() for name in ServerSettings.model_fields]
    assert rows["MODEL_PATH"] == "--model" and rows["MAX_QUEUE"] == "--max-queue"
    accepted = {option: action.dest for action in _parser()._actions for option in action.option_strings}
    assert {env: accepted.get(option) for env, option in rows.items()} == {env: env.lower() for env in rows}
