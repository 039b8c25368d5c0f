"""Reading the catalog file: where a YAML mistake is (line and column as an editor shows them), files that are not
text, city names turned into endpoint names, and region overrides checked with the GPU defaults they will get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.catalog import CatalogError, load_catalog, slug
from components.errors import file_label
from fleet.program import PROJECT_DIR

IOWA = {"id": "us-central1", "city": "Iowa", "country": "US", "geography": "americas", "tier": 1,
        "gpu_available": True}


@pytest.mark.parametrize(("city", "expected"), [("Iowa", "iowa"), ("St. Ghislain", "st-ghislain"),
                                                ("São Paulo", "sao-paulo"), (" -Zürich- ", "zurich"),
                                                ("Frankfurt am Main", "frankfurt-am-main"),
                                                ("Tel Aviv--Yafo", "tel-aviv-yafo")])
def test_city_names_become_lowercase_ascii_slugs(city: str, expected: str) -> None:
    assert slug(city) == expected


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "regions.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_syntax_error_names_line_and_column_counted_from_one(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  cpu: 2\n  memory: [4Gi\nshared: {}\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert str(e.value).startswith(f"{path}: line 4, column 7: invalid YAML: expected ',' or ']'")


def test_a_file_of_the_project_is_named_from_the_project_however_it_was_given(tmp_path: Path) -> None:
    """`fleet` reads the project's regions.yaml by an absolute path; its messages say `regions.yaml` all the same.
    A file elsewhere keeps the name it was given, and a symlink is not followed."""
    assert file_label(PROJECT_DIR / "regions.yaml") == "regions.yaml"
    assert file_label(PROJECT_DIR / "fleet" / "prices.yaml") == "fleet/prices.yaml"
    assert file_label(tmp_path / "regions.yaml") == str(tmp_path / "regions.yaml")
    assert file_label(PROJECT_DIR / "fleet" / ".." / "Makefile") == "Makefile"
    outside = PROJECT_DIR / "x" / ".." / ".." / "elsewhere.yaml"
    assert file_label(outside) == str(outside), "a file outside is never named as if inside"
    (tmp_path / "link.yaml").symlink_to(PROJECT_DIR / "regions.yaml")
    assert file_label(tmp_path / "link.yaml") == str(tmp_path / "link.yaml")


def test_a_key_given_twice_names_the_second_one(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  cpu: 2\n    \n  cpu: 4\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert str(e.value) == f"{path}: line 4, column 3: invalid YAML: duplicate key 'cpu'"


def test_a_key_given_twice_in_a_nested_entry_is_found_too(tmp_path: Path) -> None:
    path = write(tmp_path, "regions:\n  - id: us-central1\n    tier: 1\n    tier: 2\n")
    with pytest.raises(CatalogError, match=r"line 4, column 5: invalid YAML: duplicate key 'tier'$"):
        load_catalog(path)


def test_a_file_that_is_not_text_or_not_there_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as e:
        load_catalog(write(tmp_path, b"defaults: \xff\xfe\n"))
    assert str(e.value) == f"{tmp_path / 'regions.yaml'}: not UTF-8 text"
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path / "missing.yaml")
    assert str(e.value) == f"{tmp_path / 'missing.yaml'}: cannot read it (No such file or directory)"


def catalog(tmp_path: Path, defaults: dict[str, Any], gpu_defaults: dict[str, Any], overrides: dict[str, Any]) -> Path:
    return write(tmp_path, yaml.safe_dump({
        "defaults": defaults, "gpu_defaults": gpu_defaults, "shared": {"regions": ["us-central1"]},
        "registries": {"americas": "us"}, "regions": [{**IOWA, "overrides": overrides}]}))


def test_a_region_that_turns_gpu_on_is_checked_with_the_gpu_defaults_it_gets(tmp_path: Path) -> None:
    shape = {"cpu": 4, "memory": "16Gi", "cpu_idle": False}
    loaded = load_catalog(catalog(tmp_path, {}, shape, {"gpu": True}))
    assert loaded.region("us-central1").overrides.gpu is True  # alone, gpu: true on 2 vCPU would be refused


def test_a_region_that_turns_gpu_off_is_checked_without_the_gpu_defaults(tmp_path: Path) -> None:
    gpu = {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}
    cpu_region = {"gpu": False, "cpu": 1, "memory": "2Gi", "cpu_idle": True, "min_instances": 3, "max_instances": 5}
    loaded = load_catalog(catalog(tmp_path, gpu, {"max_instances": 1}, cpu_region))  # min 3 > 1 only with a GPU
    assert loaded.region("us-central1").overrides.max_instances == 5
    with pytest.raises(CatalogError, match=r"regions\[us-central1\]\.overrides.*min_instances \(3\) is greater than "
                                           r"max_instances \(1\)"):
        load_catalog(catalog(tmp_path, gpu, {"max_instances": 1}, {"min_instances": 3}))


def test_a_control_character_is_one_clear_line_too(tmp_path: Path) -> None:
    """PyYAML's reader error carries no line mark: the message still names the file and the character."""
    path = write(tmp_path, "defaults:\n  cpu: 2\x07\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(path)
    assert str(e.value).startswith(f"{path}: invalid YAML: unacceptable character #x0007: special characters are "
                                   "not allowed")
