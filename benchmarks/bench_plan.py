"""How long the offline plan takes for prod (46 services), and how it grows at 2x and 4x the endpoints.

Measures `fleet.program.evaluate` in-process (median of several runs), then cold `fleet plan` and `fleet monitor`
processes (imports included: what a user waits for; median of --cold runs), the monitor against the local fake
MetricService of the tests. Goals (issue 16): each cold process under 3 s.

Run: .venv/bin/python benchmarks/bench_plan.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import write_section
from fleet.program import PROJECT_DIR, evaluate
from tests.fakes.metric_service import FakeMetricService, serve

SERVICE = "gcp:cloudrunv2/service:Service"
COLD_GOAL_S = 3.0


def models(copies: int) -> str:
    return json.dumps([{"name": "demo" if i == 0 else f"demo{i + 1}", "regions": "all"} for i in range(copies)])


def cold(command: list[str], runs: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median seconds of `python -m fleet.cli COMMAND` as fresh processes: wall, and CPU (user + system), which
    other work on the machine inflates much less than the wall time."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fleet.cli", *command], check=True, cwd=PROJECT_DIR,
                       stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def verdict(seconds: float) -> str:
    return f"goal: under {COLD_GOAL_S:g} s: {'MET' if seconds < COLD_GOAL_S else 'MISSED'}"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold", type=int, default=3, help="cold processes per command (median)")
    args = ap.parse_args()
    evaluate("prod")  # warm imports once, as a long-lived process would
    rows = []
    base = None
    for copies in (1, 2, 4):
        overrides = {"yolo-fleet:models": models(copies)}
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            plan = evaluate("prod", config_overrides=overrides)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        base = base or median
        n = len(plan.custom(SERVICE))
        rows.append(f"| {copies}x | {n} | {len(plan.custom())} | {median:.2f} s | {median / base:.2f}x |")
        print(rows[-1], flush=True)
    plan_s, plan_cpu = cold(["plan", "--stack", "prod"], args.cold)
    print(f"cold `fleet plan --stack prod`: {plan_s:.2f} s ({plan_cpu:.2f} s CPU)")
    with serve(FakeMetricService({})) as endpoint:  # answers every query, with no series
        monitor_s, monitor_cpu = cold(["monitor", "--stack", "prod"], args.cold,
                                      {"FLEET_MONITORING_ENDPOINT": endpoint})
    print(f"cold `fleet monitor --stack prod` (local fake): {monitor_s:.2f} s ({monitor_cpu:.2f} s CPU)")
    during = load()
    body = "\n".join([
        "| endpoints | Cloud Run services | resources | evaluate (median) | vs 1x |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Cold `fleet plan --stack prod` process, imports included, median of {args.cold}: **{plan_s:.2f} s** "
        f"wall, {plan_cpu:.2f} s CPU ({verdict(plan_s)}). Beside the 1x row it is mostly importing pulumi_gcp's "
        "modules (a module of the SDK loads every resource class it has: compute's alone is about a second).",
        f"Cold `fleet monitor --stack prod` process against the tests' local fake MetricService (every endpoint's "
        f"four queries answered, no series), median of {args.cold}: **{monitor_s:.2f} s** wall, {monitor_cpu:.2f} s "
        f"CPU ({verdict(monitor_s)}). "
        "It reads the endpoints from the stack's layout (`fleet.cloud.stack_layout`) instead of evaluating the "
        "program.",
        "Each dedicated endpoint adds the same resources (its service, alerts, SLO service and SLOs; each model "
        "adds an account and its grants), so time grows about linearly with endpoints; timings share the machine "
        "with other work, so compare ratios.",
        f"Machine load when the cold processes ran: {during} (wall times stretch with it; CPU times much less).",
    ])
    write_section("plan", "Offline plan (fleet plan) and cold fleet monitor",
                  f"python benchmarks/bench_plan.py --repeat {args.repeat} --cold {args.cold}", body)


if __name__ == "__main__":
    main()
