"""`fleet policy`: the policy pack's own validations over the mocked program's resources, offline.

The Policy objects are those `pulumi preview --policy-pack policy` runs, called with pulumi_policy's
own argument classes, so an offline pass means the same rules pass in the real preview (where values
computed by the cloud may still be unknown). Exit 1 on a mandatory violation, 2 on a config mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

from fleet.mocks import RecordedResource
from fleet.program import evaluate
from fleet.render import table
from policy.config import PACK_FILE, PolicySetting, load_pack_config
from policy.facts import FACTS, StackFacts, load_facts
from policy.policies import POLICIES

EXIT_MANDATORY = 1


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # mandatory | advisory
    resource: str  # the resource's logical name, or "(stack)"
    message: str


def urn(stack: str, resource: RecordedResource) -> str:
    return f"urn:pulumi:{stack}::yolo-fleet::{resource.type}::{resource.name}"


def run_policies(resources: Sequence[RecordedResource], facts: StackFacts,
                 settings: dict[str, PolicySetting]) -> list[Violation]:
    """Every violation the pack reports for these resources, judged against `facts`."""
    urns = {urn(facts.stack, r): r for r in resources}
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    found: list[Violation] = []

    def reporter(policy: str, level: EnforcementLevel, resource: str) -> ReportViolation:
        def report(message: str, where: str | None = None) -> None:
            found.append(Violation(policy, level.value, urns[where].name if where in urns else resource, message))
        return report

    token = FACTS.set(facts)
    try:
        for policy in POLICIES:
            level, options = settings[policy.name].level, settings[policy.name].options
            if level is EnforcementLevel.DISABLED:
                continue
            if isinstance(policy, ResourceValidationPolicy):
                for address, r in urns.items():
                    args = ResourceValidationArgs(r.type, unknown_checking_proxy(r.inputs), address, r.name, opts,
                                                  None, options)
                    policy.validate(args, reporter(policy.name, level, r.name))
            else:
                stack = [PolicyResource(r.type, unknown_checking_proxy(r.inputs), address, r.name, opts, None, None,
                                        [], {}) for address, r in urns.items()]
                policy.validate(StackValidationArgs(stack, options), reporter(policy.name, level, "(stack)"))
    finally:
        FACTS.reset(token)
    return found


def render_violations(violations: Sequence[Violation]) -> str:
    rows = [[v.policy, v.level, v.resource, v.message] for v in violations]
    return table(["POLICY", "LEVEL", "RESOURCE", "MESSAGE"], rows)


def cmd_policy(args: argparse.Namespace) -> int:
    settings = load_pack_config(args.policy_config)
    facts = load_facts(args.stack, catalog=args.catalog)
    plan = evaluate(args.stack, catalog=args.catalog)
    violations = run_policies(plan.resources, facts, settings)
    mandatory = sum(v.level == EnforcementLevel.MANDATORY.value for v in violations)
    active = sum(s.level is not EnforcementLevel.DISABLED for s in settings.values())
    if args.json:
        print(json.dumps({"stack": args.stack, "violations": [asdict(v) for v in violations]}, indent=2))
    elif violations:
        print(render_violations(violations))
        print(f"\n{len(violations)} violation(s) in stack '{args.stack}': {mandatory} mandatory, "
              f"{len(violations) - mandatory} advisory ({active} policies checked).")
    else:
        print(f"Stack '{args.stack}': all {active} policies pass ({len(plan.custom())} resources checked).")
    if mandatory:
        print("fleet policy: a mandatory policy failed; `pulumi preview --policy-pack policy` would stop too.",
              file=sys.stderr)
    return EXIT_MANDATORY if mandatory else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("policy", parents=[common], help="run the policy pack over the offline plan (exit 1 on a "
                                                        "mandatory violation)")
    p.add_argument("--json", action="store_true", help="violations as JSON")
    p.add_argument("--policy-config", type=Path, default=PACK_FILE, metavar="FILE",
                   help="enforcement levels and settings (default: policy/PulumiPolicy.yaml's config)")
    p.set_defaults(func=cmd_policy)
