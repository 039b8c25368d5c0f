"""`fleet cost`: what a stack costs per month at list prices, offline.

Always-on cost (instances kept warm by min_instances, and the stack-wide load balancer rules, stored images
and secret versions) is split from traffic cost at an assumed request rate, latency and size per service;
Cloud Run totals per region, model and geography. The prices and formulas are fleet/pricing.py's, the same
ones the policy pack's budget check uses. Every total says what it covers and what it leaves out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.catalog import Catalog, load_catalog
from components.errors import FleetError, file_label
from fleet.cli import catalog_path
from fleet.pricing import (
    COVERS,
    DEFAULT_PRICES,
    EXCLUDES,
    IMAGE_SIZE_GB,
    PlatformCost,
    PriceBook,
    ServiceCost,
    Traffic,
    load_prices,
    platform_shape,
    price_platform,
    price_services,
    service_shape,
)
from fleet.program import CLOUD_RUN, Plan, evaluate
from fleet.render import table


def stack_costs(plan: Plan, catalog: Catalog, book: PriceBook, traffic: Traffic) -> list[ServiceCost]:
    shapes = [service_shape(r.name, r.inputs) for r in plan.custom(CLOUD_RUN)]
    return price_services([s for s in shapes if s], catalog, book, traffic)


def platform_costs(plan: Plan, book: PriceBook, traffic: Traffic) -> list[PlatformCost]:
    """The stack-wide lines for the resources this plan holds."""
    return price_platform(platform_shape((r.type, r.name, r.inputs) for r in plan.custom()), book, traffic)


# The most each assumed figure may be: what one Cloud Run service can see at all.
TRAFFIC_LIMITS = {
    "requests_per_second": (1e6, "requests per second on one service"),
    "latency_ms": (3.6e6, "Cloud Run's longest request timeout, 60 minutes"),
    "request_kib": (32 * 1024, "Cloud Run's 32 MiB request size limit"),
    "response_kib": (32 * 1024, "a predict answers a few KiB; 32 MiB as for requests"),
}


def traffic_from(args: argparse.Namespace) -> Traffic:
    """The assumed traffic; FleetError for a figure no traffic has (negative, nan, infinite)."""
    figures = {field.name: getattr(args, field.name) for field in dataclasses.fields(Traffic)}
    unreal = [f"{_option(name)} {value}" for name, value in figures.items() if not math.isfinite(value)]
    if unreal:
        raise FleetError(f"{', '.join(unreal)}: give a finite number")
    if args.requests_per_second < 0 or args.latency_ms <= 0:
        raise FleetError(f"--requests-per-second must be >= 0 and --latency-ms > 0 (got {args.requests_per_second} "
                         f"and {args.latency_ms})")
    negative = [_option(name) for name in ("request_kib", "response_kib", "secrets_recheck_seconds")
                if figures[name] < 0]
    if negative:
        raise FleetError(f"{', '.join(negative)} must be >= 0")
    over = [f"{_option(name)} {figures[name]:g} is over {most:g} ({why})"
            for name, (most, why) in TRAFFIC_LIMITS.items() if figures[name] > most]
    if over:  # beyond these no service answers, and the products overflow to an infinite total
        raise FleetError("; ".join(over))
    return Traffic(**figures)


def _option(name: str) -> str:
    """The command-line option of a Traffic field: latency_ms is --latency-ms."""
    return f"--{name.replace('_', '-')}"


def grand_total(costs: Sequence[ServiceCost], platform: Sequence[PlatformCost]) -> dict[str, float]:
    """always_on, traffic and total of everything priced: the Cloud Run services and the stack-wide lines."""
    always_on = sum(c.always_on for c in costs) + sum(p.always_on for p in platform)
    traffic = sum(c.traffic for c in costs) + sum(p.traffic for p in platform)
    return {"always_on": always_on, "traffic": traffic, "total": always_on + traffic}


def totals(costs: Sequence[ServiceCost], key: Callable[[ServiceCost], str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"services": 0, "always_on": 0.0, "traffic": 0.0,
                                                             "total": 0.0})
    for c in costs:
        group = out[key(c)]
        group["services"] += 1
        group["always_on"] += c.always_on
        group["traffic"] += c.traffic
        group["total"] += c.total
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["total"], kv[0])))


GROUPS: dict[str, Callable[[ServiceCost], str]] = {
    "region": lambda c: c.shape.region,
    "model": lambda c: c.shape.model,
    "geography": lambda c: c.geography,
}


def cost_report(stack: str, costs: Sequence[ServiceCost], platform: Sequence[PlatformCost], traffic: Traffic,
                book: PriceBook) -> dict[str, Any]:
    return {
        "stack": stack,
        "covers": list(COVERS),
        "not_included": list(EXCLUDES),
        "assumptions": {"requests_per_second_per_service": traffic.requests_per_second,
                        "latency_ms": traffic.latency_ms, "request_kib": traffic.request_kib,
                        "response_kib": traffic.response_kib,
                        "secrets_recheck_seconds": traffic.secrets_recheck_seconds,
                        "image_size_gb": IMAGE_SIZE_GB, "seconds_per_month": book.seconds_per_month,
                        "prices": file_label(book.path), "free_tier": "not subtracted"},
        "services": [{"name": c.shape.name, "region": c.shape.region, "tier": c.tier, "model": c.shape.model,
                      "geography": c.geography, "min_instances": c.shape.min_instances,
                      "max_instances": c.shape.max_instances, "cpu": c.shape.cpu, "memory_gib": c.shape.memory_gib,
                      "gpus": c.shape.gpus, "billing": "request" if c.shape.request_based else "instance",
                      "always_on": round(c.always_on, 2), "traffic": round(c.traffic, 2),
                      "total": round(c.total, 2), "capped_by_max_instances": c.capped} for c in costs],
        **{f"by_{name}": {k: {f: round(v, 2) for f, v in t.items()} for k, t in totals(costs, key).items()}
           for name, key in GROUPS.items()},
        "cloud_run": {"always_on": round(sum(c.always_on for c in costs), 2),
                      "traffic": round(sum(c.traffic for c in costs), 2),
                      "total": round(sum(c.total for c in costs), 2)},
        "platform": [{"item": p.item, "quantity": p.quantity, "always_on": round(p.always_on, 2),
                      "traffic": round(p.traffic, 2), "total": round(p.total, 2)} for p in platform],
        "total": {k: round(v, 2) for k, v in grand_total(costs, platform).items()},
    }


def usd(value: float) -> str:
    return f"${value:,.2f}"


def render_cost(stack: str, costs: Sequence[ServiceCost], platform: Sequence[PlatformCost], traffic: Traffic,
                book: PriceBook) -> str:
    rows = [[c.shape.name, c.shape.region, c.tier, c.shape.min_instances, c.shape.max_instances, f"{c.shape.cpu:g}",
             f"{c.shape.memory_gib:g}Gi", c.shape.gpus or "-", "request" if c.shape.request_based else "instance",
             usd(c.always_on), usd(c.traffic) + (" (capped)" if c.capped else ""), usd(c.total)]
            for c in sorted(costs, key=lambda c: (-c.total, c.shape.name))]
    out = [f"yolo-fleet cost for stack '{stack}', USD per month at list prices ({file_label(book.path)})", "",
           table(["SERVICE", "REGION", "TIER", "MIN", "MAX", "CPU", "MEMORY", "GPU", "BILLING", "ALWAYS-ON",
                  "TRAFFIC", "TOTAL"], rows), ""]
    for name, key in GROUPS.items():
        group_rows = [[k, int(t["services"]), usd(t["always_on"]), usd(t["traffic"]), usd(t["total"])]
                      for k, t in totals(costs, key).items()]
        out += [f"By {name}", table([name.upper(), "SERVICES", "ALWAYS-ON", "TRAFFIC", "TOTAL"], group_rows), ""]
    if platform:
        rows = [[p.item, p.quantity, usd(p.always_on), usd(p.traffic), usd(p.total)] for p in platform]
        out += ["Stack-wide", table(["ITEM", "QUANTITY", "ALWAYS-ON", "TRAFFIC", "TOTAL"], rows), ""]
    total = grand_total(costs, platform)
    capped = [c.shape.name for c in costs if c.capped]
    out.append(f"Total: {usd(total['total'])}/month = {usd(total['always_on'])} always-on (min_instances kept warm, "
               f"stack-wide fixed charges) + {usd(total['traffic'])} traffic at {traffic.requests_per_second:g} "
               f"requests/s per service, {traffic.latency_ms:g} ms, {traffic.request_kib:g} KiB in and "
               f"{traffic.response_kib:g} KiB out each ({book.seconds_per_month:,} s/month).")
    out.append(f"Covers: {'; '.join(COVERS)}. Not included: {'; '.join(EXCLUDES)}.")
    if capped:
        out.append(f"{len(capped)} service(s) cannot serve that rate within max_instances (priced at the cap): "
                   f"{', '.join(capped)}.")
    return "\n".join(out)


def add_pricing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests-per-second", type=float, default=Traffic.requests_per_second,
                   help="assumed requests per second on every service (default: %(default)s)")
    p.add_argument("--latency-ms", type=float, default=Traffic.latency_ms,
                   help="how long one request keeps an instance busy, ms (default: %(default)s)")
    p.add_argument("--request-kib", type=float, default=Traffic.request_kib,
                   help="request size through the load balancer, KiB (default: %(default)s)")
    p.add_argument("--response-kib", type=float, default=Traffic.response_kib,
                   help="response size through the load balancer, KiB (default: %(default)s)")
    p.add_argument("--secrets-recheck-seconds", type=float, default=Traffic.secrets_recheck_seconds,
                   help="how often a serving instance looks at each mounted secret, a Secret Manager access; the "
                        "servers' SECRETS_RECHECK_SECONDS (default: %(default)s; 0: on every request)")
    p.add_argument("--prices", type=Path, default=DEFAULT_PRICES, help="price file (default: fleet/prices.yaml)")


def cmd_cost(args: argparse.Namespace) -> int:
    traffic = traffic_from(args)
    book = load_prices(args.prices)
    catalog = catalog_path(args)
    plan = evaluate(args.stack, catalog=catalog)
    costs = stack_costs(plan, load_catalog(catalog), book, traffic)
    platform = platform_costs(plan, book, traffic)
    if args.json:
        print(json.dumps(cost_report(args.stack, costs, platform, traffic, book), indent=2))
    else:
        print(render_cost(args.stack, costs, platform, traffic, book))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cost", parents=[common], help="monthly cost at list prices: always-on and traffic, per "
                                                      "region, model and geography, plus stack-wide charges")
    add_pricing_args(p)
    p.add_argument("--json", action="store_true", help="the same costs as JSON")
    p.set_defaults(func=cmd_cost)
