"""`fleet rollout`: a new model file reaches a stack's regions wave by wave, each wave judged on its own metrics.

Steps (README "Rolling out a new model"): stage (the file joins the image, no traffic), the canary region at
10%, the canary at 100%, then geography by geography at 100%, then finish (`file` is the new file, no rollout).
Each step edits Pulumi.<stack>.yaml (fleet/stack_file.py), checks it offline (the program under mocks and the
rollout policies), applies it (fleet/deployer.py), bakes, and compares each region's new revision with its old
one over the bake in Cloud Monitoring. A breach sends every touched region back to the old revision and stops.
Every step is a line of the JSON log, which `--resume` continues from.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.catalog import GEOGRAPHIES
from components.errors import FleetError
from components.image import image_path
from components.layout import ServicePlan
from components.model_files import Refused, read_model_file
from fleet.cloud import Endpoint
from fleet.deployer import AutomationDeployer, Deployer
from fleet.monitor import Summary, metric_client, summarize
from fleet.policy import run_policies
from fleet.program import CLOUD_RUN, PROJECT_DIR, Plan, evaluate, stack_config
from fleet.stack_file import edited_values, write_model
from fleet.traffic import previous, revision
from policy.config import load_pack_config
from policy.facts import StackFacts, load_facts

CANARY_PERCENT = 10
DEFAULT_BAKE = "10m"
ROLLOUT_POLICIES = ("traffic-split", "rollout-starts-in-canary", "rollout-bake")
EXIT_BREACH = 1
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")


def parse_duration(text: str) -> float:
    """'10m' -> 600.0 seconds ('30s', '1.5h')."""
    match = DURATION.match(text.strip())
    if not match:
        raise FleetError(f"--bake {text}: give a duration like 30s, 10m or 1h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclass(frozen=True)
class Step:
    """One config state of the rollout: the wave's regions (cumulative) at `percent`, judged in `judge`."""

    name: str
    regions: tuple[str, ...] = ()
    percent: int = 0
    judge: tuple[str, ...] = ()
    final: bool = False  # `file` becomes the new file and the rollout entry goes


def plan_steps(regions: Sequence[ServicePlan], canary: str | None, waves: Sequence[str]) -> list[Step]:
    """stage, canary at 10%, canary at 100%, then each wave (a geography or comma-separated region ids; default
    the model's geographies, the canary's first) at 100%, then finish. Every region of the model is in a wave."""
    ids = [s.region.id for s in regions]
    canary = canary or ids[0]
    if canary not in ids:
        raise FleetError(f"--canary {canary}: not one of the model's regions{_suggest(canary, ids)}")
    geography = {s.region.id: s.region.geography for s in regions}
    given = bool(waves)
    if not waves:
        order = [geography[canary], *(g for g in GEOGRAPHIES if g != geography[canary])]
        waves = [g for g in order if g in geography.values()]
    steps = [Step("stage"), Step(f"canary {canary} at {CANARY_PERCENT}%", (canary,), CANARY_PERCENT, (canary,)),
             Step(f"canary {canary} at 100%", (canary,), 100, (canary,))]
    done = [canary]
    for wave in waves:
        chosen = ([r for r in ids if geography[r] == wave] if wave in GEOGRAPHIES
                  else [r.strip() for r in wave.split(",") if r.strip()])
        if wave in GEOGRAPHIES and not chosen:
            raise FleetError(f"--waves {wave}: the model has no regions in {wave}")
        unknown = [r for r in chosen if r not in ids]
        if unknown or not chosen:
            what = unknown[0] if unknown else wave
            if what in GEOGRAPHIES:
                raise FleetError(f"--waves {wave}: a comma list takes region ids; give {what} as a wave of its own")
            raise FleetError(f"--waves {wave}: {what!r} is not a geography of the model or one of its "
                             f"regions{_suggest(what, [*dict.fromkeys(geography.values()), *ids])}")
        new = [r for r in chosen if r not in done]
        if not new:  # nothing to move: the canary's geography when it holds only the canary, else a repeated wave
            if given and set(chosen) != {canary}:
                raise FleetError(f"--waves {wave}: every region in it is in an earlier wave (or is the canary)")
            continue
        done += new
        steps.append(Step(f"wave {wave} ({len(new)} region(s)) at 100%", tuple(done), 100, tuple(new)))
    left = [r for r in ids if r not in done]
    if left:
        raise FleetError(f"--waves leave out {', '.join(left)}; every region of the model must be in a wave")
    return [*steps, Step("finish", final=True)]


def _suggest(wrong: str, names: Sequence[str]) -> str:
    """'; did you mean X?' for a close name, else how many names there are and a few of them."""
    close = difflib.get_close_matches(wrong, names, n=1)
    if close:
        return f"; did you mean {close[0]}?"
    return f" ({len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"


@dataclass
class Verdict:
    """One region's new revision against its old one over the bake."""

    region: str
    old: str
    new: str
    old_error_ratio: float
    new_error_ratio: float
    old_p95_ms: float | None
    new_p95_ms: float | None
    new_requests: int
    breaches: list[str] = field(default_factory=list)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def judge(client: Any, project: str, service: ServicePlan, old: str, new: str, bake_s: float) -> Verdict:
    """A breach is a new revision worse than its old one and beyond the catalog's alert threshold (error ratio,
    p95 latency); unreadable metrics are a breach too. The old revision is read over the bake, or, when it
    served nothing then (a wave at 100%), over the bake before it."""
    endpoint = Endpoint(service.name, service.service_name, service.region.id, service.role)
    seconds = max(60, int(bake_s))
    after: Summary = summarize(client, project, endpoint, seconds, revision=new)
    before: Summary = summarize(client, project, endpoint, seconds, revision=old)
    if before.error is None and not before.totalRequests:
        before = summarize(client, project, endpoint, 2 * seconds, revision=old)
    s = service.settings
    verdict = Verdict(service.region.id, old, new, before.errorRate, after.errorRate, before.p95LatencyMs,
                      after.p95LatencyMs, after.totalRequests)
    for summary, which in ((after, "new"), (before, "old")):
        if summary.error:
            verdict.breaches.append(f"metrics of the {which} revision unreadable: {summary.error}")
    if after.errorRate > max(before.errorRate, s.alert_error_ratio):
        verdict.breaches.append(f"error ratio {after.errorRate:.2%} > old {before.errorRate:.2%} and alert "
                                f"threshold {s.alert_error_ratio:.2%}")
    if after.p95LatencyMs is not None and after.p95LatencyMs > max(before.p95LatencyMs or 0, s.alert_latency_p95_ms):
        verdict.breaches.append(f"p95 latency {after.p95LatencyMs:g} ms > old {before.p95LatencyMs or 0:g} ms and "
                                f"alert threshold {s.alert_latency_p95_ms} ms")
    return verdict


@dataclass(frozen=True)
class Rollout:
    """What to roll out where; `stack_dir` holds Pulumi.<stack>.yaml (the project, or a copy in tests)."""

    stack: str
    model: str
    to: str
    bake_s: float
    canary: str | None = None
    waves: tuple[str, ...] = ()
    stack_dir: Path = PROJECT_DIR
    log: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.log or self.stack_dir / ".fleet" / f"rollout-{self.stack}-{self.model}.jsonl"


@dataclass
class Runner:
    """Runs a Rollout; `deployer`, `metrics` (a MetricService client factory), `sleep` and `out` are injected."""

    rollout: Rollout
    deployer: Deployer
    metrics: Callable[[], Any] = metric_client
    sleep: Callable[[float], None] = time.sleep
    out: Callable[[str], None] = print

    def log(self, event: str, **data: Any) -> None:
        """One JSON line of the rollout's log: what `--resume` and a post-mortem read."""
        path = self.rollout.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(json.dumps({"time": datetime.now(UTC).isoformat(), "event": event, **data}) + "\n")

    def _values(self) -> dict[str, str]:
        return stack_config(self.rollout.stack, self.rollout.stack_dir)

    def _entry(self, step: Step, old_file: str) -> tuple[str, dict[str, Any] | None]:
        if step.final:
            return self.rollout.to, None
        return old_file, {"to": self.rollout.to, "percent": step.percent, "regions": list(step.regions),
                          "bake_minutes": round(self.rollout.bake_s / 60, 3)}

    def _check(self, values: dict[str, str], facts: StackFacts) -> Plan:
        """The step's plan under mocks, stopped by any rollout policy it breaks (the whole pack runs in `up`)."""
        plan = evaluate(self.rollout.stack, config=values)
        broken = [v for v in run_policies(plan.resources, facts, load_pack_config())
                  if v.policy in ROLLOUT_POLICIES and v.level == "mandatory"]
        if broken:
            raise FleetError("\n".join(f"{v.policy}: {v.message}" for v in broken))
        return plan

    def _apply(self, step: Step, old_file: str) -> tuple[Plan, StackFacts]:
        file, rollout = self._entry(step, old_file)
        where = f"Pulumi.{self.rollout.stack}.yaml"
        values = edited_values(self._values(), self.rollout.model, file, rollout, where)
        facts = load_facts(self.rollout.stack, config=values)
        plan = self._check(values, facts)
        write_model(self.rollout.stack_dir / where, self.rollout.model, file, rollout)
        self.deployer.apply(self.rollout.stack)
        return plan, facts

    def _judge(self, step: Step, plan: Plan, facts: StackFacts) -> list[Verdict]:
        services = {r.inputs["location"]: r.inputs for r in plan.custom(CLOUD_RUN)
                    if r.inputs["template"]["labels"].get("model") == self.rollout.model}
        client = self.metrics()
        verdicts = []
        for region in step.judge:
            inputs = services[region]
            old = previous(inputs)
            service = next(s for s in facts.layout.endpoints
                           if s.model and s.model.name == self.rollout.model and s.region.id == region)
            verdicts.append(judge(client, facts.config.project, service, old[0] if old else "-", revision(inputs),
                                  self.rollout.bake_s))
        return verdicts

    def run(self, steps: list[Step], old_file: str, start: int = 0) -> int:
        """Steps from `start` on; 0 when the new file serves everywhere, EXIT_BREACH after a rollback."""
        for i in range(start, len(steps)):
            step = steps[i]
            self.out(f"[{i + 1}/{len(steps)}] {step.name}: applying")
            plan, facts = self._apply(step, old_file)
            self.log("applied", step=i, name=step.name, regions=list(step.regions), percent=step.percent)
            if not step.judge:
                continue
            self.out(f"[{i + 1}/{len(steps)}] {step.name}: baking {self.rollout.bake_s:g}s")
            self.sleep(self.rollout.bake_s)
            verdicts = self._judge(step, plan, facts)
            ok = not any(v.breaches for v in verdicts)
            self.log("judged", step=i, ok=ok, verdicts=[asdict(v) for v in verdicts])
            for v in verdicts:
                self.out(f"  {v.region}: new {v.new} errors {v.new_error_ratio:.2%} p95 {_ms(v.new_p95_ms)} "
                         f"({v.new_requests} requests) vs old {v.old} errors {v.old_error_ratio:.2%} p95 "
                         f"{_ms(v.old_p95_ms)}: {'; '.join(v.breaches) or 'ok'}")
            if not ok:
                return self._roll_back(step, old_file, verdicts)
        self.log("done")
        self.out(f"rollout of {self.rollout.to} done: models[{self.rollout.model}].file is it in every region")
        return 0

    def _roll_back(self, step: Step, old_file: str, verdicts: list[Verdict]) -> int:
        """Every region the new revision reached goes back to the old one (0%); the others never changed."""
        back = Step("rollback", step.regions, 0)
        self.out(f"breach: rolling back {', '.join(step.regions)} to the old revision")
        self._apply(back, old_file)
        self.log("rolled-back", regions=list(step.regions),
                  breaches={v.region: v.breaches for v in verdicts if v.breaches})
        self.out(f"rolled back: {', '.join(step.regions)} serve {old_file} again; the new revision stays at 0% "
                 f"behind its canary URL for inspection. Report: {self.rollout.log_path}")
        return EXIT_BREACH


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def start(rollout: Rollout, runner_for: Callable[[Rollout], Runner], resume: bool, dry_run: bool) -> int:
    """Plan the steps (or take them from the log with --resume) and run them; --dry-run only prints them."""
    facts = load_facts(rollout.stack, config=stack_config(rollout.stack, rollout.stack_dir))
    config, layout = facts.config, facts.layout
    model = next((m for m in config.models if m.name == rollout.model), None)
    if model is None:
        raise FleetError(f"--model {rollout.model}: no such model in Pulumi.{rollout.stack}.yaml "
                         f"({', '.join(m.name for m in config.models)})")
    try:  # as the program will read it at the first step: a dry run is where a wrong path should show
        read_model_file(model.name, rollout.to, PROJECT_DIR)
    except Refused as reason:
        raise FleetError(f"--to {rollout.to}: {reason}") from None
    least = load_pack_config()["rollout-bake"]
    if least.level.value == "mandatory" and rollout.stack in least.options.get("stacks", ["prod"]) \
            and rollout.bake_s < 60 * float(least.options.get("minBakeMinutes", 5)):
        raise FleetError(f"--bake: the {rollout.stack} stack requires a bake of at least "
                         f"{least.options.get('minBakeMinutes', 5)} minutes (policy rollout-bake)")
    records = read_log(rollout.log_path)
    begun = next((r for r in records if r["event"] == "start"), None)
    ended = any(r["event"] in ("done", "rolled-back") for r in records)
    if resume:
        if begun is None or ended or begun["to"] != rollout.to:
            raise FleetError(f"--resume: no unfinished rollout of {rollout.to} in {rollout.log_path}")
        steps = [Step(s["name"], tuple(s["regions"]), s["percent"], tuple(s["judge"]), s["final"])
                 for s in begun["steps"]]
        old_file = begun["from"]
        passed = [r["step"] for r in records if r["event"] == "judged" and r["ok"]]
        passed += [r["step"] for r in records if r["event"] == "applied" and not steps[r["step"]].judge]
        first = max(passed, default=-1) + 1
        if first < len(steps):
            print(f"resuming at step {first + 1}/{len(steps)} ({steps[first].name})")
        return runner_for(rollout).run(steps, old_file, first)
    if begun and not ended:
        raise FleetError(f"a rollout of {begun['to']} is under way ({rollout.log_path}): --resume it, or delete the "
                         "log after checking the stack file")
    if model.rollout is not None:
        raise FleetError(f"Pulumi.{rollout.stack}.yaml: models[{model.name}].rollout is set already; finish or "
                         "remove it first")
    if image_path(rollout.to) == image_path(model.file):  # one file in the image: ./models/x.onnx is models/x.onnx
        raise FleetError(f"--to {rollout.to}: it is already model {model.name}'s file in Pulumi.{rollout.stack}.yaml; "
                         "roll out another file")
    regions = [s for s in layout.endpoints if s.model and s.model.name == model.name]
    steps = plan_steps(regions, rollout.canary, rollout.waves)
    if dry_run:
        print(f"dry run: rollout of {rollout.to} for model {model.name} in stack {rollout.stack} "
              f"(now {model.file}); bake {rollout.bake_s:g}s per judged step; nothing is changed")
        for i, step in enumerate(steps):
            writes = (f"file: {rollout.to}, no rollout" if step.final else
                      f"rollout: {{to: {rollout.to}, percent: {step.percent}, regions: [{', '.join(step.regions)}]}}")
            judged = f"; judged in {', '.join(step.judge)}" if step.judge else ""
            print(f"[{i + 1}/{len(steps)}] {step.name}: {writes}{judged}")
        return 0
    if rollout.log_path.exists():
        rollout.log_path.unlink()  # a finished rollout's log: this is a new one
    runner = runner_for(rollout)
    runner.log("start", stack=rollout.stack, model=model.name, to=rollout.to, bake_s=rollout.bake_s,
                steps=[asdict(s) for s in steps], **{"from": model.file})
    return runner.run(steps, model.file)


def cmd_rollout(args: argparse.Namespace) -> int:
    rollout = Rollout(args.stack, args.model, args.to, parse_duration(args.bake), args.canary,
                      tuple(args.waves or ()), log=Path(args.log) if args.log else None)
    deployer = AutomationDeployer(PROJECT_DIR, PROJECT_DIR / "policy")
    return start(rollout, lambda r: Runner(r, deployer), args.resume, args.dry_run)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rollout", parents=[common],
                       help="roll a new model file out wave by wave, judged on its metrics, rolled back on a breach")
    p.add_argument("--model", required=True, help="the model entry's name")
    p.add_argument("--to", required=True, help="the new ONNX file (a repository path)")
    p.add_argument("--waves", nargs="+", metavar="WAVE",
                   help="after the canary: geographies or comma-separated region ids, in order (default: the "
                        "model's geographies, the canary's first)")
    p.add_argument("--canary", metavar="REGION", help="the canary region (default: the model's first region)")
    p.add_argument("--bake", default=DEFAULT_BAKE, help="how long each wave runs before it is judged (default 10m)")
    p.add_argument("--log", help="the JSON log (default .fleet/rollout-<stack>-<model>.jsonl)")
    p.add_argument("--dry-run", action="store_true", help="print the steps; change nothing")
    p.add_argument("--resume", action="store_true", help="continue an interrupted rollout from its log")
    p.set_defaults(func=cmd_rollout)
