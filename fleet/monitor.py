"""`fleet monitor`: requests, errors, latency percentiles and instances per endpoint, from Cloud Monitoring.

Endpoint names come from the stack's layout, which the program declares its Cloud Run services from.
`FLEET_MONITORING_ENDPOINT=host:port` sends queries to an insecure gRPC server instead of Google's (tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import FleetError
from fleet.cloud import Endpoint, call_limits, google_client, project, stack_endpoints
from fleet.render import table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 86400, "30d": 30 * 86400}
PLOT_TOP = 12
POINTS_PER_RANGE = 24  # alignment periods per range: the resolution of --plot


@dataclass
class Summary:
    name: str
    region: str
    role: str
    totalRequests: int = 0
    errorCount: int = 0
    errorRate: float = 0.0
    avgLatencyMs: float | None = None
    p50LatencyMs: float | None = None
    p95LatencyMs: float | None = None
    p99LatencyMs: float | None = None
    instanceCount: int = 0
    coldStarts: int = 0
    error: str | None = None
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


# --- percentiles from a Cloud Monitoring distribution -------------------------------------------------

def bucket_bounds(options: Any) -> list[tuple[float, float]]:
    """(lower, upper) of each bucket; bucket 0 is underflow, the last one overflow (upper = lower there)."""
    if options.HasField("exponential_buckets"):
        e = options.exponential_buckets
        edges = [e.scale * e.growth_factor ** i for i in range(e.num_finite_buckets + 1)]
    elif options.HasField("linear_buckets"):
        lb = options.linear_buckets
        edges = [lb.offset + lb.width * i for i in range(lb.num_finite_buckets + 1)]
    else:
        edges = list(options.explicit_buckets.bounds)
    return [(min(0.0, edges[0]), edges[0]), *itertools.pairwise(edges), (edges[-1], edges[-1])]


def percentile(bounds: Sequence[tuple[float, float]], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1), interpolated linearly inside the bucket where it falls; None without samples."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for (low, high), n in zip(bounds, counts, strict=False):
        if n and seen + n >= rank:
            return low + (high - low) * (rank - seen) / n
        seen += n
    return bounds[len(counts) - 1][0]


# --- querying -----------------------------------------------------------------------------------------

def metric_client() -> Any:
    from google.cloud import monitoring_v3
    from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

    return google_client(monitoring_v3.MetricServiceClient, MetricServiceGrpcTransport, "FLEET_MONITORING_ENDPOINT")


def _query(client: Any, project: str, endpoint: Endpoint, metric: str, seconds: int, aligner: str,
           revision: str | None = None) -> list[Any]:
    from google.cloud import monitoring_v3

    now = time.time()
    interval = monitoring_v3.TimeInterval(end_time={"seconds": int(now)}, start_time={"seconds": int(now) - seconds})
    period = max(60, seconds // POINTS_PER_RANGE // 60 * 60)
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{project}",
        filter=(f'metric.type="{metric}" AND resource.type="cloud_run_revision" AND '
                f'resource.labels.service_name="{endpoint.service}" AND resource.labels.location="{endpoint.region}"'
                + (f' AND resource.labels.revision_name="{revision}"' if revision else "")),
        interval=interval,
        aggregation=monitoring_v3.Aggregation(
            alignment_period={"seconds": period},
            per_series_aligner=getattr(monitoring_v3.Aggregation.Aligner, aligner)),
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
    return list(client.list_time_series(request=request, **call_limits()))


def _end(point: Any) -> float:
    return float(point.interval.end_time.timestamp())


def summarize(client: Any, project: str, endpoint: Endpoint, seconds: int, revision: str | None = None) -> Summary:
    """One endpoint's figures over the last `seconds` (one revision's only, if given: `fleet rollout`); an API error
    becomes Summary.error, not an exception."""
    out = Summary(endpoint.name, endpoint.region, endpoint.role)
    try:
        requests: dict[float, float] = {}
        errors: dict[float, float] = {}
        for series in _query(client, project, endpoint, "run.googleapis.com/request_count", seconds, "ALIGN_DELTA",
                             revision):
            is_error = series.metric.labels.get("response_code_class") == "5xx"
            for p in series.points:
                requests[_end(p)] = requests.get(_end(p), 0) + p.value.int64_value
                if is_error:
                    errors[_end(p)] = errors.get(_end(p), 0) + p.value.int64_value
        out.totalRequests = int(sum(requests.values()))
        out.errorCount = int(sum(errors.values()))
        out.errorRate = out.errorCount / out.totalRequests if out.totalRequests else 0.0
        out.series["requests"] = sorted(requests.items())
        out.series["errors"] = sorted((t, errors.get(t, 0)) for t in requests)

        merged: list[int] = []
        bounds: list[tuple[float, float]] = []
        latency_sum = latency_count = 0.0
        p95_over_time = []
        for series in _query(client, project, endpoint, "run.googleapis.com/request_latencies", seconds,
                             "ALIGN_DELTA", revision):
            for p in series.points:
                d = p.value.distribution_value
                counts = list(d.bucket_counts)
                if not d.count:
                    continue
                bounds = bucket_bounds(d.bucket_options)
                merged += [0] * (len(counts) - len(merged))
                for i, n in enumerate(counts):
                    merged[i] += n
                latency_sum += d.mean * d.count
                latency_count += d.count
                p95 = percentile(bounds, counts, 0.95)
                if p95 is not None:  # a distribution whose buckets count nothing
                    p95_over_time.append((_end(p), p95))
        if latency_count:
            out.avgLatencyMs = round(latency_sum / latency_count, 1)
            quantiles = [percentile(bounds, merged, q) for q in (0.5, 0.95, 0.99)]
            out.p50LatencyMs, out.p95LatencyMs, out.p99LatencyMs = (None if v is None else round(v, 1)
                                                                     for v in quantiles)
        out.series["latencyP95"] = sorted(p95_over_time)

        latest: dict[float, float] = {}
        for series in _query(client, project, endpoint, "run.googleapis.com/container/instance_count", seconds,
                             "ALIGN_MAX", revision):
            if series.metric.labels.get("state", "active") != "active":
                continue  # idle instances wait for requests; "instances" means the ones serving
            for p in series.points:
                latest[_end(p)] = latest.get(_end(p), 0) + p.value.int64_value
        out.instanceCount = int(latest[max(latest)]) if latest else 0

        for series in _query(client, project, endpoint, "run.googleapis.com/container/startup_latencies", seconds,
                             "ALIGN_DELTA", revision):
            out.coldStarts += sum(int(p.value.distribution_value.count) for p in series.points)
    except Exception as error:  # an API error or timeout for one endpoint must not hide the others
        cause = getattr(error, "cause", None) or error  # a RetryError wraps the last API error
        out.error = f"{type(cause).__name__}: {getattr(cause, 'message', None) or cause}"
    return out


def collect(client: Any, project: str, endpoints: Sequence[Endpoint], seconds: int,
            progress: Callable[[int, int], None] | None = None) -> list[Summary]:
    """All endpoints concurrently (8 at a time): 46 endpoints take seconds."""
    results = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(summarize, client, project, e, seconds) for e in endpoints]
        for done, future in enumerate(as_completed(futures), 1):
            results.append(future.result())
            if progress:
                progress(done, len(futures))
    return results


def worst_first(summaries: list[Summary]) -> list[Summary]:
    return sorted(summaries, key=lambda s: (s.error is None, -s.errorRate, -(s.p95LatencyMs or 0), s.name))


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def render(summaries: list[Summary]) -> str:
    """One row per endpoint; one that could not be read shows '-' for every figure, never zeros that look read."""
    rows = [[s.name, s.region, *(["-"] * 9 if s.error else [
             s.totalRequests, s.errorCount, fmt(s.errorRate * 100, ".2f") + "%", fmt(s.avgLatencyMs),
             fmt(s.p50LatencyMs), fmt(s.p95LatencyMs), fmt(s.p99LatencyMs), s.instanceCount, s.coldStarts]),
             s.error or ("no data" if not s.totalRequests and not s.instanceCount else "")]
            for s in summaries]
    return table(["ENDPOINT", "REGION", "REQUESTS", "ERRORS", "ERR%", "AVG ms", "P50 ms", "P95 ms", "P99 ms",
                  "INSTANCES", "COLD STARTS", "NOTE"], rows)


def figure(summaries: list[Summary]) -> Figure:
    """Requests, errors and p95 latency over time, one line per endpoint (the PLOT_TOP busiest: 46 lines are noise);
    time on a date axis in UTC, as Cloud Monitoring's console shows it, so points can be matched to logs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    for s in sorted(summaries, key=lambda s: -s.totalRequests)[:PLOT_TOP]:
        for ax, key in zip(axes, ("requests", "errors", "latencyP95"), strict=True):
            points = [(t, v) for t, v in s.series.get(key, []) if v is not None]
            if points:
                ax.plot([datetime.fromtimestamp(t, UTC) for t, _ in points], [v for _, v in points], label=s.name)
    for ax, title in zip(axes, ("requests", "5xx errors", "p95 latency (ms)"), strict=True):
        ax.set_title(title)
    locator = mdates.AutoDateLocator(tz=UTC)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    axes[-1].set_xlabel("time (UTC)")
    if any(ax.lines for ax in axes):
        axes[0].legend(fontsize="x-small", ncol=4)
    fig.tight_layout()
    return fig


def check_plot_path(path: str) -> None:
    """Before any query: a --plot file in a directory that exists, of a format matplotlib writes (by its suffix)."""
    from matplotlib.backend_bases import FigureCanvasBase

    target = Path(path)
    if not target.parent.is_dir():
        raise FleetError(f"--plot {path}: no such directory {target.parent}")
    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        raise FleetError(f"--plot {path}: not an image file name; end it in .png (or {', '.join(sorted(formats))})")


def plot(summaries: list[Summary], path: str) -> None:
    """Write ``figure(summaries)`` to ``path`` (checked by ``check_plot_path``)."""
    import matplotlib.pyplot as plt

    fig = figure(summaries)
    try:
        fig.savefig(path)
    except OSError as error:
        raise FleetError(f"--plot {path}: cannot write it ({error.strerror or error})") from None
    finally:
        plt.close(fig)


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{done}/{total} endpoints", end="" if done < total else "\n", file=sys.stderr)


def cmd_monitor(args: argparse.Namespace) -> int:
    if args.plot:
        check_plot_path(args.plot)  # a typo in the command line first, not after every query
    gcp_project, client = project(args), metric_client()  # then credentials, before reading the stack
    summaries = worst_first(collect(client, gcp_project, stack_endpoints(args), RANGES[args.range], _progress))
    for s in summaries:
        if s.error:
            print(f"fleet monitor: {s.name} ({s.region}): {s.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(s).items() if k != "series"} for s in summaries], indent=2))
    else:
        print(render(summaries))
    if args.plot:
        plot(summaries, args.plot)
    return 1 if all(s.error for s in summaries) else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("monitor", parents=[common], help="requests, errors, latency per endpoint (Cloud Monitoring)")
    p.add_argument("--range", choices=list(RANGES), default="1h", help="how far back (default 1h)")
    p.add_argument("--endpoint", help="one endpoint, e.g. demo-iowa (or its Cloud Run service, demo-iowa-prod)")
    p.add_argument("--project", help="GCP project (default: the stack's gcp:project)")
    p.add_argument("--json", action="store_true", help="every figure of each endpoint as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of requests, errors and p95 latency over time")
    p.set_defaults(func=cmd_monitor)
