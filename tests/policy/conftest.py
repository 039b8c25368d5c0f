"""The smallest plan that shows what the policies judge: the stock stacks over a catalog cut to four regions.

A policy test pays for each plan it evaluates (a second for these, four for the stock prod stack's 46 services),
and mutation testing pays it again for every planted bug, so rules are judged on these plans or on their
resources edited (each test gets its own deep copy from the session's plan cache).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.program import Plan, evaluate

# The provider modules the program declares its resources from (about 500 modules, seconds to import), loaded when
# pytest collects these tests rather than at the first plan: mutation testing forks each run after collection, so
# every planted bug would otherwise import them again. A plain run pays the same once either way.
# pulumi_gcp's subpackages load lazily, on their first attribute: one is read from each.
for _package in ("artifactregistry", "cloudrunv2", "compute", "monitoring", "organizations", "projects",
                 "secretmanager", "serviceaccount", "storage"):
    getattr(importlib.import_module(f"pulumi_gcp.{_package}"), "__all__", None)

# us-central1: the home region (GPU, warm); us-west1: a plain one; europe-west1 (GPU) and asia-east1: with
# us-central1, the shared API's regions and the stock tenants' data regions, so the stock prod stack's file fits.
SMALL_REGIONS = ("us-central1", "us-west1", "europe-west1", "asia-east1")


def keep_small(data: dict[str, Any]) -> dict[str, Any]:
    """A catalog's data cut to SMALL_REGIONS, in place (for write_catalog's mutate)."""
    data["regions"] = [r for r in data["regions"] if r["id"] in SMALL_REGIONS]
    return data


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory, catalog_data: dict[str, Any]) -> Path:
    path = tmp_path_factory.mktemp("small") / "regions.yaml"
    path.write_text(yaml.safe_dump(keep_small(copy.deepcopy(catalog_data)), sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def small_prod(small_catalog: Path) -> Plan:
    """The stock prod stack over the small catalog: 4 demo services, 3 shared ones."""
    return evaluate("prod", catalog=small_catalog)
