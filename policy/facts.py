"""What the policies know about a stack beyond its resources: its config, catalog, resolved layout, prices.

Read from the project's files (Pulumi.<stack>.yaml, its catalog, fleet/prices.yaml), the same files
`pulumi up` and `fleet plan` read, so the pack judges a change against the catalog it came with. The
stack comes from each resource's URN (`urn:pulumi:<stack>::...`).
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from components.catalog import Catalog
from components.layout import FleetLayout
from components.settings import EndpointSettings
from components.stack_config import StackConfig
from fleet.pricing import DEFAULT_PRICES, PriceBook, load_prices
from fleet.program import PROJECT_DIR, stack_layout


@dataclass(frozen=True)
class StackFacts:
    stack: str
    config: StackConfig
    catalog: Catalog
    layout: FleetLayout
    prices: PriceBook

    def settings_of(self, service: str) -> EndpointSettings | None:
        """The resolved settings of a Cloud Run service (by its physical name) the layout declares, None for any
        other."""
        plan = self.layout.by_service_name(service)
        return plan.settings if plan else None


def load_facts(stack: str, project_dir: Path = PROJECT_DIR, catalog: str | Path | None = None,
               prices: str | Path = DEFAULT_PRICES, config: dict[str, str] | None = None) -> StackFacts:
    """FleetError (exit 2 in the CLI) if the stack file (or `config`, standing in for it), its catalog or the
    price file is invalid."""
    found = stack_layout(stack, project_dir, catalog, config)
    return StackFacts(stack, found.config, found.catalog, found.layout, load_prices(prices))


def stack_of(urn: str) -> str:
    """'urn:pulumi:prod::yolo-fleet::gcp:cloudrunv2/service:Service::demo-iowa' -> 'prod'."""
    return urn.split("::", 1)[0].split(":", 2)[2]


# `fleet policy` and `fleet diff` set this to judge a plan against given facts (another catalog, an old
# commit's files); under `pulumi preview --policy-pack policy` it is unset and the project's files are read.
FACTS: ContextVar[StackFacts | None] = ContextVar("FACTS", default=None)


@functools.cache
def _project_facts(stack: str) -> StackFacts:
    return load_facts(stack)


def facts_for(urn: str) -> StackFacts:
    return FACTS.get() or _project_facts(stack_of(urn))
