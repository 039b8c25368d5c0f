"""`fleet diff --against REF`: what a change does to a stack, for a pull request's review.

The plan at REF is made by REF's own code from REF's own files (`git archive` into a temporary
directory, then that tree's `python -m fleet.cli plan --json`), so an old catalog is planned by the
code that went with it. Both plans are then judged by the working tree's policy pack and priced by
its cost model: endpoints added, removed and changed, policy results, and monthly cost before/after.
Any failure (unknown ref, invalid catalog at REF, a price file without a region's tier) stops with one
message and exit 2 before anything is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import FleetError
from fleet.cost import add_pricing_args, platform_costs, stack_costs, traffic_from, usd
from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.pricing import COVERS, PlatformCost, PriceBook, ServiceCost, Traffic, load_prices, service_shape
from fleet.program import CLOUD_RUN, COMPONENT_PREFIX, PROJECT_DIR, Plan, evaluate
from fleet.props import dig
from fleet.render import table
from fleet.traffic import revision, split
from policy.config import load_pack_config
from policy.facts import load_facts
from policy.readiness import listing

PLAN_TIMEOUT_S = 300
FIELDS = ("region", "min", "max", "cpu", "memory", "gpu", "image", "revision", "traffic")
LONG = ("image", "revision", "traffic")  # shown when they change, not in an added or removed line


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, check=False)


def resolve_ref(ref: str) -> str:
    """The commit REF names; FleetError if it names none."""
    found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise FleetError(f"--against {ref}: no such commit, branch or tag in this repository (fetch it first, "
                         "e.g. `git fetch origin main`, or give a commit id)")
    return found.stdout.decode().strip()


def export_tree(commit: str, dest: Path) -> None:
    """The project's files at `commit` into `dest` (what `git archive` holds: tracked files only)."""
    prefix = _git("rev-parse", "--show-prefix").stdout.decode().strip()
    archive = _git("archive", "--format=tar", f"{commit}:{prefix}" if prefix else commit)
    if archive.returncode != 0:
        raise FleetError(f"git archive {commit[:12]}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")


def plan_at(tree: Path, stack: str, label: str) -> Plan:
    """Run the tree's own `fleet plan --json --show-secrets`; a stack that did not exist there plans to nothing. A
    tree from before that option plans with its secret inputs masked, which the review is told."""
    if not (tree / f"Pulumi.{stack}.yaml").is_file():
        return Plan(stack, [], {})
    done = _plan_json(tree, stack, label, "--show-secrets")
    if done.returncode == 2 and "--show-secrets" in done.stderr:  # older: the variable some trees read instead
        done = _plan_json(tree, stack, label, env={"FLEET_PLAN_SHOW_SECRETS": "1"})
        if done.returncode == 0 and '"[secret]"' in done.stdout:
            print(f"note: the plan at {label} masks secret inputs (its fleet predates --show-secrets): a violation "
                  "about them (placeholder key digests, example tenants) shows as new", file=sys.stderr)
    if done.returncode != 0:
        raise FleetError(f"the plan at {label} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    data = json.loads(done.stdout)
    resources = [RecordedResource(r["type"], r["name"], r["inputs"], custom=not r["type"].startswith(COMPONENT_PREFIX))
                 for r in data["resources"]]  # `plan --json` does not say which are components: their type does
    return Plan(stack, resources, data.get("outputs", {}))


def _plan_json(tree: Path, stack: str, label: str, *extra: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(tree)}
    try:
        return subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--json", "--stack", stack, *extra],
                              cwd=tree, env=env, capture_output=True, text=True, timeout=PLAN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError(f"the plan at {label} took more than {PLAN_TIMEOUT_S} s") from None


def endpoint_fields(resource: RecordedResource) -> dict[str, str]:
    shape = service_shape(resource.name, resource.inputs)
    image = dig(resource.inputs, "template", "containers", 0, "image")
    served = {"revision": revision(resource.inputs), "traffic": split(resource.inputs)}
    if shape is None:
        return {"image": str(image), **served}
    return {"region": shape.region, "min": str(shape.min_instances), "max": str(shape.max_instances),
            "cpu": f"{shape.cpu:g}", "memory": f"{shape.memory_gib:g}Gi", "gpu": str(shape.gpus), "image": str(image),
            **served}


@dataclass(frozen=True)
class Side:
    """One plan as the review sees it."""

    endpoints: dict[str, dict[str, str]]
    violations: list[Violation]
    costs: list[ServiceCost]
    platform: list[PlatformCost]  # stack-wide lines, priced as `fleet cost` prices them
    # every resource the plan declares (the program's components left out): type -> logical names
    resources: dict[str, set[str]] = field(default_factory=dict)

    def cost(self, part: str) -> float:
        return float(sum(getattr(c, part) for c in self.costs) + sum(getattr(p, part) for p in self.platform))


def judge(plan: Plan, project_dir: Path, catalog: str | Path | None, book: PriceBook, traffic: Traffic,
          label: str) -> Side:
    services = [r for r in plan.resources if r.type == CLOUD_RUN]
    declared: dict[str, set[str]] = {}
    for r in plan.custom():
        declared.setdefault(r.type, set()).add(r.name)
    if not services:
        return Side({}, [], [], [], declared)
    try:
        facts = load_facts(plan.stack, project_dir, catalog=catalog, prices=book.path)
    except FleetError as error:
        raise FleetError(f"at {label}: {error}") from None
    cloud_run = Plan(plan.stack, services, plan.outputs)
    return Side({r.name: endpoint_fields(r) for r in services},
                run_policies(plan.resources, facts, load_pack_config()),
                stack_costs(cloud_run, facts.catalog, book, traffic), platform_costs(plan, book, traffic), declared)


@dataclass(frozen=True)
class Diff:
    stack: str
    against: str
    before: Side
    after: Side
    traffic: Traffic

    @property
    def added(self) -> list[str]:
        return sorted(set(self.after.endpoints) - set(self.before.endpoints))

    @property
    def removed(self) -> list[str]:
        return sorted(set(self.before.endpoints) - set(self.after.endpoints))

    @property
    def changed(self) -> list[tuple[str, str, str, str]]:
        """(service, field, before, after) for every field that differs."""
        out = []
        for name in sorted(set(self.before.endpoints) & set(self.after.endpoints)):
            old, new = self.before.endpoints[name], self.after.endpoints[name]
            out += [(name, f, old.get(f, "-"), new.get(f, "-")) for f in FIELDS if old.get(f) != new.get(f)]
        return out

    def resource_rows(self) -> list[list[str]]:
        """('added' | 'removed', type, how many, which) for the resources beside the Cloud Run services (those are
        the endpoints' rows): a balancer switched on is hosts, certificates and backends a reviewer must see."""
        rows = []
        for type_ in sorted(set(self.before.resources) | set(self.after.resources)):
            if type_ == CLOUD_RUN:
                continue
            old, new = self.before.resources.get(type_, set()), self.after.resources.get(type_, set())
            for change, names in (("added", new - old), ("removed", old - new)):
                if names:
                    rows.append([change, _short_type(type_), str(len(names)), listing(sorted(names), most=4)])
        return rows

    def policy_rows(self) -> list[tuple[str, Violation]]:
        """('new' | 'changed' | 'still' | 'resolved', violation), in that order. Matched one to one: the same
        violation is 'still'; one whose message differs only in its numbers ("84 resources" against "80",
        max_instances 40 against 400) is 'changed', not a resolved-and-new pair claiming the placeholder project
        was fixed and brought anew."""
        unmatched = list(self.before.violations)
        status: dict[int, str] = {}
        for i, v in enumerate(self.after.violations):
            if v in unmatched:
                unmatched.remove(v)
                status[i] = "still"
        for i, v in enumerate(self.after.violations):
            if i not in status:
                same = next((b for b in unmatched if _identity(b) == _identity(v)), None)
                if same is not None:
                    unmatched.remove(same)
                status[i] = "new" if same is None else "changed"
        rows = [(status[i], v) for kind in ("new", "changed", "still")
                for i, v in enumerate(self.after.violations) if status[i] == kind]
        return rows + [("resolved", v) for v in unmatched]

    def cost_rows(self) -> list[list[str]]:
        rows = []
        for label, part in (("always-on", "always_on"), ("traffic", "traffic"), ("total", "total")):
            old, new = self.before.cost(part), self.after.cost(part)
            rows.append([label, usd(old), usd(new), ("+" if new >= old else "-") + usd(abs(new - old))])
        return rows


def _short_type(token: str) -> str:
    """gcp:compute/managedSslCertificate:ManagedSslCertificate -> compute ManagedSslCertificate."""
    parts = token.split(":")
    return f"{parts[1].split('/')[0]} {parts[-1]}" if len(parts) == 3 else token


def _identity(v: Violation) -> tuple[str, str, str, str]:
    return v.policy, v.level, v.resource, re.sub(r"\d+", "#", v.message)


def _summary(d: Diff) -> str:
    mandatory = sum(v.level == "mandatory" for v in d.after.violations)
    waves = _in_waves(d.before), _in_waves(d.after)
    rollout = f"; {waves[0]} -> {waves[1]} service(s) in a model rollout wave" if any(waves) else ""
    return (f"{len(d.added)} endpoint(s) added, {len(d.removed)} removed, {len({c[0] for c in d.changed})} changed "
            f"({len(d.before.endpoints)} -> {len(d.after.endpoints)} Cloud Run services; "
            f"{sum(map(len, d.before.resources.values()))} -> {sum(map(len, d.after.resources.values()))} resources in "
            "all); policy violations "
            f"{len(d.before.violations)} -> {len(d.after.violations)} ({mandatory} mandatory after){rollout}")


def _in_waves(side: Side) -> int:
    """Services that split traffic between an old revision and a canary (README "Rolling out a new model")."""
    return sum("(canary)" in e.get("traffic", "") for e in side.endpoints.values())


def _endpoint_rows(d: Diff) -> list[list[str]]:
    rows = [["added", n, ", ".join(f"{k} {v}" for k, v in d.after.endpoints[n].items() if k not in LONG), ""]
            for n in d.added]
    rows += [["removed", n, ", ".join(f"{k} {v}" for k, v in d.before.endpoints[n].items() if k not in LONG), ""]
             for n in d.removed]
    return rows + [["changed", name, field, f"{old} -> {new}"] for name, field, old, new in d.changed]


def _assumptions(d: Diff) -> str:
    return (f"USD/month at list prices; traffic at {d.traffic.requests_per_second:g} requests/s per service, "
            f"{d.traffic.latency_ms:g} ms each; covers {', '.join(COVERS)}; `fleet cost` says what it leaves out")


def render_text(d: Diff) -> str:
    out = [f"fleet diff: stack '{d.stack}', working tree against {d.against}", "", _summary(d), ""]
    endpoints = _endpoint_rows(d)
    if endpoints:
        out += ["Endpoints", table(["CHANGE", "SERVICE", "WHAT", "BEFORE -> AFTER"], endpoints), ""]
    if resources := d.resource_rows():
        out += ["Other resources", table(["CHANGE", "TYPE", "HOW MANY", "NAMES"], resources), ""]
    out += [f"Monthly cost ({_assumptions(d)})", table(["", "BEFORE", "AFTER", "DELTA"], d.cost_rows()), ""]
    rows = d.policy_rows()
    policies = [[status, v.policy, v.level, v.resource, v.message] for status, v in rows if status != "still"]
    still = sum(status == "still" for status, _ in rows)
    if policies:
        out += ["Policy results that change", table(["STATUS", "POLICY", "LEVEL", "RESOURCE", "MESSAGE"], policies)]
    out.append(f"{still} violation(s) unchanged (`fleet policy --stack {d.stack}` lists them)." if still
               else "No other policy violations.")
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(_md(str(c)) for c in row) + " |" for row in rows])


def render_markdown(d: Diff) -> str:
    out = [f"### `fleet diff`: stack `{d.stack}` against `{d.against}`", "", _summary(d), ""]
    endpoints = _endpoint_rows(d)
    if endpoints:
        rows = [[change, f"`{name}`", what, values.replace(" -> ", " → ")] for change, name, what, values in endpoints]
        out += ["#### Endpoints", "", _md_table(["change", "service", "what", "before → after"], rows), ""]
    if resources := d.resource_rows():
        out += ["#### Other resources", "", _md_table(["change", "type", "how many", "names"], resources), ""]
    out += [f"#### Monthly cost ({_assumptions(d)})", "", _md_table(["", "before", "after", "delta"], d.cost_rows()),
            ""]
    policies = d.policy_rows()
    changing = [[status, f"`{v.policy}`", v.level, f"`{v.resource}`", v.message] for status, v in policies
                if status != "still"]
    still = [[f"`{v.policy}`", v.level, f"`{v.resource}`", v.message] for status, v in policies if status == "still"]
    out += ["#### Policies", ""]
    if changing:
        out += [_md_table(["status", "policy", "level", "resource", "message"], changing), ""]
    if still:
        out += [f"<details><summary>{len(still)} violation(s) unchanged by this change</summary>", "",
                _md_table(["policy", "level", "resource", "message"], still), "", "</details>"]
    if not changing and not still:
        out.append("All policies pass before and after.")
    return "\n".join(out)


def compute_diff(against: str, stack: str, catalog: str | None, book: PriceBook, traffic: Traffic) -> Diff:
    commit = resolve_ref(against)
    label = f"{against} ({commit[:10]})"
    with tempfile.TemporaryDirectory(prefix="fleet-diff-") as tmp:
        tree = Path(tmp)
        export_tree(commit, tree)
        before = judge(plan_at(tree, stack, label), tree, None, book, traffic, label)
    after = judge(evaluate(stack, catalog=catalog), PROJECT_DIR, catalog, book, traffic, "the working tree")
    return Diff(stack, label, before, after, traffic)


def cmd_diff(args: argparse.Namespace) -> int:
    diff = compute_diff(args.against, args.stack, args.catalog, load_prices(args.prices), traffic_from(args))
    print(render_markdown(diff) if args.markdown else render_text(diff))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diff", parents=[common], help="compare the working tree's plan with the plan at a git ref: "
                                                      "endpoints, policy results, monthly cost")
    p.add_argument("--against", required=True, metavar="REF", help="git commit, branch or tag (e.g. origin/main)")
    p.add_argument("--markdown", action="store_true", help="Markdown for a pull request comment")
    add_pricing_args(p)
    p.set_defaults(func=cmd_diff)
