"""The smallest plan that shows what the policies judge: the stock stacks over a catalog cut to four regions.

A policy test pays for each plan it evaluates (a second for these, four for the stock prod stack's 46 services),
and mutation testing pays it again for every planted bug, so rules are judged on these plans or on their
resources edited (each test gets its own deep copy from the session's plan cache).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.program import Plan, evaluate

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
