"""Golden plan names: what `fleet plan --json` names in the project, per resource type, committed as
tests/plans/<stack>.names.json, so renaming anything that exists in a project is a diff a reviewer sees.

A resource's physical name is the input its API keys it by (tests/components/test_names.py: NAME_RULES, each
type's first field; the others, like an SLO's service, are references). Types whose identity the API makes up
(NO_NAME there) and the program's own components have none. Regenerate (`make golden`) with, per stack:

    .venv/bin/python -m fleet.cli plan --stack prod --json | .venv/bin/python -m tests.plans.golden \
        > tests/plans/prod.names.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fleet.program import COMPONENT_PREFIX
from tests.components.test_names import NAME_RULES, NO_NAME

PLANS_DIR = Path(__file__).resolve().parent
STACKS = ("dev", "prod")
REGENERATE = "make golden"
NAME_FIELD = {type_: next(iter(fields)) for type_, fields in NAME_RULES.items()}


class UnknownType(Exception):
    """A resource type neither named nor known to be nameless: decide which it is in test_names.py."""


def golden_path(stack: str) -> Path:
    return PLANS_DIR / f"{stack}.names.json"


def physical_names(plan: dict[str, Any]) -> dict[str, list[str]]:
    """A `fleet plan --json` document -> resource type -> its resources' sorted physical names."""
    names: dict[str, list[str]] = {}
    for resource in plan["resources"]:
        type_ = resource["type"]
        if type_ in NAME_FIELD:
            names.setdefault(type_, []).append(str(resource["inputs"][NAME_FIELD[type_]]))
        elif type_ not in NO_NAME and not type_.startswith(COMPONENT_PREFIX):
            raise UnknownType(f"{type_} ({resource['name']}): add it to NAME_RULES (with the input holding its "
                              "physical name) or NO_NAME in tests/components/test_names.py")
    return {type_: sorted(found) for type_, found in sorted(names.items())}


def render(names: dict[str, list[str]]) -> str:
    return json.dumps(names, indent=2) + "\n"


def main() -> int:
    """stdin: a `fleet plan --json` document. A plan that failed (its one-line error already printed) sends nothing:
    one line here too, exit 2, no JSON traceback after it."""
    text = sys.stdin.read()
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as error:
        print(f"tests.plans.golden: no plan on stdin ({'empty' if not text.strip() else error}); the plan's own "
              "error is above", file=sys.stderr)
        return 2
    sys.stdout.write(render(physical_names(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
