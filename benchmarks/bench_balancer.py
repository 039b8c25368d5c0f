"""How long the prod plan takes with `yolo-fleet:domain` set (a host, NEG and backend per endpoint, a backend
per model), at 1x, 2x and 4x the endpoints, beside the same plans without it: the balancer must keep the plan
about linear in endpoints (issue 14).

Run: .venv/bin/python benchmarks/bench_balancer.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_plan import SERVICE, models
from benchmarks.results import write_section
from fleet.program import evaluate

DOMAIN = "models.example.com"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"


def timed(overrides: dict[str, str], repeat: int) -> tuple[float, int, int, int]:
    """(median seconds, Cloud Run services, resources, serverless NEGs) of prod planned under `overrides`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        plan = evaluate("prod", config_overrides=overrides)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(plan.custom(SERVICE)), len(plan.custom()), len(plan.custom(NEG))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    evaluate("prod")  # warm imports once
    rows, base = [], None
    for copies in (1, 2, 4):
        plain = timed({"yolo-fleet:models": models(copies)}, args.repeat)
        domain = timed({"yolo-fleet:models": models(copies), "yolo-fleet:domain": DOMAIN}, args.repeat)
        base = base or domain[0]
        rows.append(f"| {copies}x | {domain[1]} | {plain[2]} | {plain[0]:.2f} s | {domain[2]} ({domain[3]} NEGs) | "
                    f"{domain[0]:.2f} s | {domain[0] / base:.2f}x |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "| endpoints | Cloud Run services | resources, no domain | evaluate | resources, domain set | evaluate "
        "(median) | vs 1x |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "With `domain` each endpoint adds a serverless NEG, a backend service, a host rule and path matcher, and "
        "each model a backend service and a host alert; certificates grow by one per model. Time stays about "
        "linear in endpoints; timings share the machine with other work, so compare ratios.",
    ])
    write_section("balancer", "Offline plan with the global balancer (yolo-fleet:domain)",
                  "python benchmarks/bench_balancer.py", body)


if __name__ == "__main__":
    main()
