"""Guardrails for staged model rollouts (README "Rolling out a new model"): a traffic split that Cloud Run can
apply and that names only revisions the plan creates or keeps, a start in one canary region, and a real bake.

What a revision is named is the program's business (components/revisions.py); here a split may name the
template's revision and, only in a region of its model's rollout wave, one other revision of the same service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fleet.props import dig, known
from policy.facts import StackFacts

Options = Mapping[str, Any]


def check_traffic_split(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    """Percentages sum to 100; every named revision is this service's, and only a wave keeps a second one."""
    name, props = r.name, r.props
    targets, revision, service = dig(props, "traffics"), dig(props, "template", "revision"), dig(props, "name")
    if not known(targets, revision, service) or not targets:
        return
    total = sum(float(dig(t, "percent") or 0) for t in targets)
    if abs(total - 100) > 1e-9:
        yield f"{name}: traffic percentages sum to {total:g}, not 100; Cloud Run refuses such a split"
    plan = facts.layout.by_service_name(str(service))
    rollout = plan.model.rollout if plan and plan.model else None
    in_wave = bool(rollout and plan and plan.region.id in rollout.regions)
    others = {str(dig(t, "revision")) for t in targets if dig(t, "revision") and dig(t, "revision") != revision}
    for other in sorted(others):
        if not other.startswith(f"{service}-"):
            yield f"{name}: traffic names revision {other}, which is not a revision of {service}"
    if others and not in_wave:
        yield (f"{name}: traffic keeps revision(s) {', '.join(sorted(others))} beside {revision}, but {service} is "
               "in no rollout wave: the plan neither creates nor keeps them; send all traffic to the template's "
               "revision")
    elif len(others) > 1:
        yield f"{name}: a rollout wave keeps one old revision beside the new one, not {len(others)}"


def check_rollout_start(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    """A wave between 0 and 100% is a canary: one region. Later waves, each at 100%, may cover many, and a rolled
    back one (0%: every touched region on its old revision) too."""
    for model in facts.config.models:
        r = model.rollout
        if r and 0 < r.percent < 100 and len(r.regions) > 1:
            yield (f"Pulumi.{facts.stack}.yaml: models[{model.name}].rollout: {r.percent}% of traffic in "
                   f"{len(r.regions)} regions ({', '.join(r.regions)}); a rollout starts in one canary region "
                   "(`fleet rollout` does), and only a wave at 100% (or a rolled-back one, at 0%) may cover more", "")


def check_rollout_bake(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    """In the listed stacks, each wave bakes at least `minBakeMinutes` before it is judged."""
    least = float(options.get("minBakeMinutes", 5))
    if facts.stack not in options.get("stacks", ()):
        return
    for model in facts.config.models:
        if model.rollout and model.rollout.bake_minutes < least:
            yield (f"Pulumi.{facts.stack}.yaml: models[{model.name}].rollout.bake_minutes: "
                   f"{model.rollout.bake_minutes:g} is below the {least:g} minutes the {facts.stack} stack requires "
                   f"before a wave is judged; `fleet rollout --bake {least:g}m` or more", "")
