"""Property test: any breaking edit to regions.yaml is exit 2 with a message, never a traceback or a plan."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.cli import main
from fleet.program import PROJECT_DIR

BASE: dict[str, Any] = yaml.safe_load((PROJECT_DIR / "regions.yaml").read_text())
INT_FIELDS = ["min_instances", "max_instances", "concurrency", "timeout_seconds", "cpu"]
REQUIRED_REGION_FIELDS = ["id", "city", "country", "geography", "tier"]
NOT_A_NUMBER = st.one_of(st.text(min_size=1, max_size=8).filter(lambda s: not s.strip().lstrip("+-").isdigit()),
                         st.lists(st.integers(), max_size=2), st.none(), st.dictionaries(st.text(max_size=3),
                                                                                         st.integers(), max_size=1))
OUT_OF_RANGE = {
    "min_instances": st.integers(max_value=-1),
    "max_instances": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
    "concurrency": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
    "timeout_seconds": st.one_of(st.integers(max_value=0), st.integers(min_value=3601)),
    "cpu": st.integers().filter(lambda n: n not in (1, 2, 4, 6, 8)),
    "memory": st.one_of(st.text(max_size=6).filter(lambda s: s not in {"2Gi", "4Gi", "8Gi", "16Gi", "24Gi", "32Gi"}),
                        st.integers()),
}


@st.composite
def broken_catalog(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A copy of the catalog with one edit that must be refused, and a word the message must contain."""
    data = copy.deepcopy(BASE)
    index = draw(st.integers(0, len(data["regions"]) - 1))
    region = data["regions"][index]
    kind = draw(st.sampled_from(["type", "range", "unknown-key", "duplicate", "remove", "region-id", "section"]))
    if kind == "type":
        field = draw(st.sampled_from(INT_FIELDS))
        target = draw(st.sampled_from(["defaults", "override"]))
        (data["defaults"] if target == "defaults" else region.setdefault("overrides", {}))[field] = draw(NOT_A_NUMBER)
        return data, field
    if kind == "range":
        field = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        region.setdefault("overrides", {})[field] = draw(OUT_OF_RANGE[field])
        return data, field
    if kind == "unknown-key":
        key = draw(st.from_regex(r"[a-z_]{3,12}", fullmatch=True).filter(
            lambda k: k not in {"id", "city", "country", "geography", "tier", "gpu_available", "enabled", "overrides"}))
        region[key] = draw(st.integers())
        return data, key
    if kind == "duplicate":
        data["regions"].insert(draw(st.integers(0, len(data["regions"]))), copy.deepcopy(region))
        return data, region["id"]
    if kind == "remove":
        field = draw(st.sampled_from(REQUIRED_REGION_FIELDS))
        del region[field]
        return data, field
    if kind == "region-id":
        region["id"] = draw(st.from_regex(r"[a-z]{2,8}-[a-z]{3,8}[0-9]{1,2}", fullmatch=True).filter(
            lambda rid: rid not in {r["id"] for r in BASE["regions"]}))
        return data, region["id"]
    section = draw(st.sampled_from(["defaults", "shared", "registries", "regions"]))
    if draw(st.booleans()):
        del data[section]
    else:
        data[section] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    return data, section


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=broken_catalog())
def test_any_breaking_edit_is_refused_cleanly(case, capsys):
    data, word = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "regions.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        code = main(["plan", "--catalog", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, f"accepted a broken catalog (edit touching {word!r})"
    assert out == "", "nothing printed as if it were a plan"
    assert "regions.yaml" in err and str(word) in err
    assert "Traceback" not in err
