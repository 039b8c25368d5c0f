"""`fleet`: plan, check and price a yolo-fleet stack offline; watch and roll out a deployed one.
Exit 0 on success; 1 when the answer is bad news (a mandatory policy violation, a rolled-back rollout, resource
types with no known API, Cloud Monitoring or Logging failing); 2 on a mistake in the input; 141 when the reader of
the output went away (`| head`)."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from components.catalog import load_catalog
from components.errors import FleetError
from fleet.program import PROJECT_DIR, evaluate, stack_config, stopped_plan
from fleet.render import render_plan, render_regions
from inference_service.flag_hint import flag_hint

EXIT_INPUT_ERROR = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process its reader went away from (128 + SIGPIPE)


def catalog_path(args: argparse.Namespace) -> Path:
    """--catalog, else the stack's `yolo-fleet:catalog`, else regions.yaml (all relative to the project)."""
    if args.catalog:
        return Path(args.catalog)
    configured = stack_config(args.stack).get("yolo-fleet:catalog", "regions.yaml")
    return PROJECT_DIR / configured


def cmd_plan(args: argparse.Namespace) -> int:
    if args.explain is not None:  # '--explain ""' is a region it cannot find, not the plan
        return explain_plan(args)
    catalog = catalog_path(args)
    plan = evaluate(args.stack, catalog=catalog)
    if args.json:
        print(json.dumps(plan.to_json(args.show_secrets), indent=2, sort_keys=False))
    else:
        print(render_plan(plan, load_catalog(catalog)))
    return 0


def explain_plan(args: argparse.Namespace) -> int:
    """`fleet plan --explain REGION`: the resolved layout alone (no resources are declared), so it is quick."""
    from fleet.explain import explain, find_region, render_explain
    from policy.facts import load_facts

    facts = load_facts(args.stack, catalog=args.catalog)
    region = find_region(facts.catalog, facts.layout, args.explain, args.stack, catalog_path(args).name)
    if args.json:
        print(json.dumps({"stack": args.stack, "region": region.id, "services": explain(facts.layout, region)},
                         indent=2))
    else:
        print(render_explain(facts.layout, region, args.stack))
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    catalog = load_catalog(catalog_path(args))
    if args.json:
        print(json.dumps([r.model_dump() for r in catalog.regions], indent=2))
    else:
        print(render_regions(catalog))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add this module's commands; other command modules (fleet/<command>.py) offer the same function."""
    plan = sub.add_parser("plan", parents=[common], help="what `pulumi up` would create, evaluated offline")
    plan.add_argument("--json", action="store_true", help="resources with inputs as the provider receives them")
    # `fleet diff` plans another tree with it: its policies must see the same secret inputs (placeholder digests) on
    # both sides, or every masked value looks like a violation the change brings. Not for people: hidden.
    plan.add_argument("--show-secrets", action="store_true", help=argparse.SUPPRESS)
    plan.add_argument("--explain", metavar="REGION",
                      help="instead of the plan: each setting of each service in REGION (id or city) and the layer "
                           "that set it")
    plan.set_defaults(func=cmd_plan)
    regions = sub.add_parser("regions", parents=[common], help="the region catalog, with counts per geography")
    regions.add_argument("--json", action="store_true", help="the catalog's regions with every field")
    regions.set_defaults(func=cmd_regions)


# Each module adds its subcommands with register(sub, common); a new command is a module and a line here.
COMMAND_MODULES: tuple[str, ...] = ("fleet.cli", "fleet.policy", "fleet.cost", "fleet.diff", "fleet.monitor",
                                    "fleet.logs", "fleet.apis", "fleet.rollout")


class OneLineErrors(argparse.ArgumentParser):
    """A wrong option or value is one line naming the command (`fleet monitor: error: ...`), as every other input
    mistake is, with where to read more, not argparse's usage block; exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT_ERROR, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", default="prod", help="stack name: reads Pulumi.<stack>.yaml (default: prod)")
    common.add_argument("--catalog", help="region catalog file (default: the stack's, else regions.yaml)")
    p = OneLineErrors(prog="fleet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    for choice in sub._choices_actions:  # `fleet plan --help` opens with what `fleet --help` says of plan
        command = sub.choices[choice.dest]
        command.description = command.description or choice.help
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an option the command does not have is its error (with a close match), not the top level's."""
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:
        command = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        command.error(f"unrecognized arguments: {' '.join(unknown)}{flag_hint(command, unknown[0])}")
    return args


def other_checkout(cwd: Path) -> Path | None:
    """The checkout of this project the user stands in, when it is not the one this `fleet` reads (PROJECT_DIR:
    where it is installed from): another checkout's venv would quietly plan, diff or roll out the wrong files.
    Another Pulumi project (another `name:` in its Pulumi.yaml) is none of its business."""
    here = next((p for p in (cwd, *cwd.parents) if (p / "Pulumi.yaml").is_file()), None)
    if here is None or here.resolve() == PROJECT_DIR.resolve():
        return None
    return here if _project_name(here) == _project_name(PROJECT_DIR) else None


def _project_name(root: Path) -> str | None:
    try:
        found = re.search(r"^name:\s*(\S+)", (root / "Pulumi.yaml").read_text(encoding="utf-8"), re.M)
    except (OSError, UnicodeDecodeError):
        return None
    return found[1] if found else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if (elsewhere := other_checkout(Path.cwd())) is not None:
        print(f"fleet: note: this fleet reads {PROJECT_DIR}, not {elsewhere} where you are; run that checkout's own "
              f".venv/bin/fleet", file=sys.stderr)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except FleetError as error:
        stopped = " stopped before declaring anything:\n" if stopped_plan(error) else " "
        print(f"fleet {args.command}:{stopped}{error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except BrokenPipeError:  # `fleet ... | head`: the reader has all it wants; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return EXIT_BROKEN_PIPE


# Commands that plan (or read) and exit; monitor, logs --follow and rollout live on and keep the cycle collector.
ONE_SHOT_COMMANDS = frozenset({"plan", "regions", "cost", "diff", "policy", "apis"})


def run() -> int:
    """The `fleet` program. A one-shot command runs without the cycle collector: turning it back on after a plan
    makes it walk the plan's ~350,000 objects once more (~0.35 s of a cold `fleet plan`) to free memory the process
    gives back a moment later. At exit the interpreter runs one last collection over every object still alive
    (~0.4 s after a prod plan), for memory the process gives back anyway: frozen objects are skipped. ``main``
    leaves the collector alone: tests call it in their own process."""
    atexit.register(gc.freeze)
    if sys.argv[1:2] and sys.argv[1] in ONE_SHOT_COMMANDS:
        gc.disable()
    return main()


if __name__ == "__main__":
    sys.exit(run())
