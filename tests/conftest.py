"""Shared fixtures: plans of the real program under mocks, and catalog variants written to tmp files."""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import fleet.program
from components.stack_config import NAMESPACE
from fleet.program import PROJECT_DIR, Plan, evaluate, stack_config
from tests.stacks import AWKWARD_STACKS, plan_stack

CATALOG = PROJECT_DIR / "regions.yaml"
PLAN_CALLS: dict[str, list[int]] = {}  # stack -> [plans asked for, plans evaluated], for the summary line
SKIP_IMAGE_ENV = "YOLO_FLEET_SKIP_IMAGE"  # "1": skip the tests marked `image` (the image build and its pip installs)
CATALOG_KEY = f"{NAMESPACE}:catalog"
# The regions the tests of a few prod endpoints look at: Iowa (warm, a shared region), South Carolina and Oregon
# (plain defaults), Eemshaven (its own max_instances) and Tokyo; prod_in() plans prod's model in these only.
FEW_REGIONS = ("us-central1", "us-east1", "us-west1", "europe-west4", "asia-northeast1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse two tests with one id: pytest-xdist's file scheduling (`make test`) keys tests by id and would run
    only one of them, silently."""
    twice = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if twice:
        raise pytest.UsageError(f"tests sharing an id (give each its own parameter id): {', '.join(twice)}")


@pytest.hookimpl(tryfirst=True)  # before any fixture: the image fixture would start building
def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.environ.get(SKIP_IMAGE_ENV) == "1" and item.get_closest_marker("image"):
        pytest.skip(f"{SKIP_IMAGE_ENV}=1: the server image is neither built nor installed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its plan counts to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["plan_calls"] = PLAN_CALLS


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The controller of a pytest-xdist run adds up its workers' plan counts."""
    for stack, (asked, evaluated) in getattr(node, "workeroutput", {}).get("plan_calls", {}).items():
        counts = PLAN_CALLS.setdefault(stack, [0, 0])
        counts[0] += asked
        counts[1] += evaluated


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many plans the run asked for and how many it evaluated: the suite's largest cost, kept visible."""
    if PLAN_CALLS:
        top = sorted(PLAN_CALLS.items(), key=lambda kv: -kv[1][0])[:3]
        terminalreporter.write_line(
            f"plans: {sum(a for a, _ in PLAN_CALLS.values())} asked for, {sum(e for _, e in PLAN_CALLS.values())} "
            f"evaluated, the rest served from the cache or stopped by a mistake in their input "
            f"({'; '.join(f'{stack}: {a} asked, {e} evaluated' for stack, (a, e) in top)}; ...)")


@pytest.fixture(scope="session", autouse=True)
def plans_once_per_input() -> Iterator[dict[tuple[Any, ...], Plan]]:
    """Each distinct program input is evaluated once per run: the suite asks for the same plans dozens of times,
    each a few seconds. The key is what the program reads: the stack, its config, the project and the catalog's
    bytes rather than its path (the CLI names regions.yaml by its absolute path, `evaluate("prod")` by the
    stack file's relative one; tests rewrite catalogs at reused paths; the path only appears in error messages);
    the repository's other files are not changed by tests. Every caller gets a deep copy, so a test that edits its
    plan edits nobody else's; failed evaluations are not cached (they stop before declaring anything: quick)."""
    real = fleet.program._evaluate
    cache: dict[tuple[Any, ...], Plan] = {}

    def cached(stack: str, config: dict[str, str], project_dir: Path) -> Plan:
        catalog = Path(project_dir) / config.get(CATALOG_KEY, "regions.yaml")
        content = hashlib.sha256(catalog.read_bytes()).hexdigest() if catalog.is_file() else config.get(CATALOG_KEY)
        key = (stack, tuple(sorted(kv for kv in config.items() if kv[0] != CATALOG_KEY)), str(project_dir), content)
        counts = PLAN_CALLS.setdefault(stack, [0, 0])
        counts[0] += 1
        if key not in cache:
            cache[key] = real(stack, config, project_dir)
            counts[1] += 1  # counted once it succeeded: failures are not cached
        return copy.deepcopy(cache[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fleet.program, "_evaluate", cached)
        yield cache


@pytest.fixture(scope="session")
def catalog_data() -> dict[str, Any]:
    return yaml.safe_load(CATALOG.read_text())


@pytest.fixture(scope="session")
def prod_plan() -> Plan:
    return evaluate("prod")


@pytest.fixture(scope="session")
def dev_plan() -> Plan:
    return evaluate("dev")


@pytest.fixture(scope="session")
def awkward_plans() -> dict[str, Plan]:
    """The real program planned for stack names the APIs' naming rules make awkward (tests/stacks.py)."""
    return {stack: plan_stack(stack) for stack in AWKWARD_STACKS}


@pytest.fixture
def write_catalog(tmp_path: Path, catalog_data: dict[str, Any]) -> Callable[..., Path]:
    """write_catalog(mutate) -> path of a copy of regions.yaml changed by `mutate(data)`."""

    def write(mutate: Callable[[dict[str, Any]], None] | None = None, text: str | None = None) -> Path:
        path = tmp_path / "regions.yaml"
        if text is not None:
            path.write_text(text)
            return path
        data = copy.deepcopy(catalog_data)
        if mutate:
            mutate(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return path

    return write


def region_entry(data: dict[str, Any], region_id: str) -> dict[str, Any]:
    return next(r for r in data["regions"] if r["id"] == region_id)


def deployable(stack: str) -> dict[str, str]:
    """Config overrides a user would set before a first deploy, replacing the stock stack's placeholders (project,
    key digests, example.com domain, example tenants) and giving alerts a channel: what `fleet policy` passes."""
    digest = hashlib.sha256(f"{stack} test key".encode()).hexdigest()
    return {
        "gcp:project": f"northwind-vision-{stack}",
        "yolo-fleet:api_key_sha256": json.dumps([digest]),
        "yolo-fleet:shared_domain": f"inference-{stack}.northwind-vision.io",
        "yolo-fleet:tenants": json.dumps({
            "northwind": {"data_region": "us-central1", "key_sha256": [hashlib.sha256(b"northwind").hexdigest()]},
            "tailspin": {"data_region": "europe-west1", "key_sha256": [hashlib.sha256(b"tailspin").hexdigest()]}}),
        "yolo-fleet:notification_channels": json.dumps([
            {"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@northwind-vision.io"}}]),
    }


def prod_in(regions: Iterable[str] = FEW_REGIONS) -> dict[str, str]:
    """Config overrides planning Pulumi.prod.yaml's models in `regions` only: every prod setting (SLOs, deletion
    protection, cap, budget, tenants, the shared services) for tests whose subject is a few endpoints, at a
    fraction of the cost of its 43 (a plan's cost grows with its endpoints). Tests that keep the default regions
    and the same other inputs share one evaluation (plans_once_per_input)."""
    models = json.loads(stack_config("prod")[f"{NAMESPACE}:models"])
    return {f"{NAMESPACE}:models": json.dumps([{**model, "regions": list(regions)} for model in models])}


# Iowa kept warm, Eemshaven's max_instances of 20, and the shared API's three regions (Iowa, St. Ghislain, Changhua
# County): every case the monitoring tests check, in a sixth of prod's resources.
MONITORING_REGIONS = ("us-central1", "europe-west1", "europe-west4", "asia-east1")


def monitoring_regions(data: dict[str, Any]) -> None:
    """write_catalog's mutation keeping only MONITORING_REGIONS."""
    data["regions"] = [r for r in data["regions"] if r["id"] in MONITORING_REGIONS]


@pytest.fixture
def small_catalog(write_catalog: Callable[..., Path]) -> Path:
    return write_catalog(monitoring_regions)


@pytest.fixture
def small_prod(small_catalog: Path, plans_once_per_input: dict[tuple[Any, ...], Plan]) -> Iterator[Plan]:
    """The prod stack over MONITORING_REGIONS, planned afresh for each test and dropped from the run's cache after
    it: mutation testing runs, for each mutant, only the tests whose own run reached the mutated code, and a plan
    served from the cache reaches none of it."""
    cached = set(plans_once_per_input)
    yield evaluate("prod", catalog=small_catalog)
    for key in set(plans_once_per_input) - cached:
        del plans_once_per_input[key]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure() -> None:
    """Exit without the interpreter's last collections over everything the run built (plans, models, clients):
    seconds per process that nobody waits for."""
    gc.freeze()
