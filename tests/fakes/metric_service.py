"""A fake `google.monitoring.v3.MetricService` serving canned series per (service, metric type), answering
ListTimeSeries as the API does where the answer depends on the request (google.monitoring.v3.ListTimeSeriesRequest,
Aggregation): only points inside `interval`; each series aligned into `alignment_period` buckets by its
`per_series_aligner` (ALIGN_DELTA sums a DELTA metric's points and keeps its value type, ALIGN_RATE divides that
by the period and answers doubles, ALIGN_MAX takes the largest; distributions accept only ALIGN_DELTA here), points
newest first; a `cross_series_reducer` (REDUCE_SUM) merges series, keeping only the `group_by_fields` labels; the
HEADERS view answers no points; results a page at a time with a `next_page_token`. Anything else is refused
(INVALID_ARGUMENT for what the API refuses, UNIMPLEMENTED for what this fake does not know), so a query that drifts
from what is evaluated here fails loudly."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from contextlib import AbstractContextManager

import grpc
from google.api import distribution_pb2, metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3

from tests.fakes import serve_unary

Series = list[monitoring_v3.TimeSeries]
Aligner, Reducer = monitoring_v3.Aggregation.Aligner, monitoring_v3.Aggregation.Reducer


def recent() -> int:
    """Half an hour ago: points from here on fall inside every `fleet monitor --range`."""
    return int(time.time()) - 1800
# The clauses `fleet monitor` may send, joined by " AND "; another clause is refused (INVALID_ARGUMENT, as the API
# refuses what it cannot parse), so a query that drifts fails loudly.
CLAUSE = re.compile(r'^(metric\.type|resource\.type|resource\.labels\.(?:service_name|location|revision_name))'
                    r'="([^"]+)"$')


def count_series(code_class: str, values: list[int], start: int | None = None,
                 label: str = "response_code_class") -> monitoring_v3.TimeSeries:
    """One point a minute from `start` (default: half an hour ago, inside every --range)."""
    start = recent() if start is None else start
    points = [monitoring_v3.Point(interval={"end_time": {"seconds": start + 60 * i}},
                                  value={"int64_value": v}) for i, v in enumerate(values)]
    return monitoring_v3.TimeSeries(metric=metric_pb2.Metric(labels={label: code_class}),
                                    resource=monitored_resource_pb2.MonitoredResource(type="cloud_run_revision"),
                                    points=points)


def gauge_series(values: list[int], state: str = "active", start: int | None = None) -> monitoring_v3.TimeSeries:
    """instance_count: one series per instance state (active, idle)."""
    return count_series(state, values, start, label="state")


def distribution_series(counts: list[list[int]], mean: float, scale: float = 1.0, growth: float = 2.0,
                        start: int | None = None) -> monitoring_v3.TimeSeries:
    """One point per bucket-count list, exponential buckets (scale, growth), each point with `mean`."""
    start = recent() if start is None else start
    options = distribution_pb2.Distribution.BucketOptions(exponential_buckets=distribution_pb2.Distribution.
                                                          BucketOptions.Exponential(
                                                              num_finite_buckets=len(counts[0]) - 2,
                                                              growth_factor=growth, scale=scale))
    points = [monitoring_v3.Point(interval={"end_time": {"seconds": start + 60 * i}},
                                  value={"distribution_value": distribution_pb2.Distribution(
                                      count=sum(c), mean=mean, bucket_options=options, bucket_counts=c)})
              for i, c in enumerate(counts)]
    return monitoring_v3.TimeSeries(points=points)


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _merge(values: list, kind: str) -> object:
    """DELTA values of one alignment period, merged as ALIGN_DELTA does (distributions: counts and buckets add)."""
    if kind == "int64_value":
        return sum(values)
    count = sum(d.count for d in values)
    buckets = [sum(c) for c in zip(*(d.bucket_counts for d in values), strict=True)]
    return distribution_pb2.Distribution(count=count, mean=sum(d.mean * d.count for d in values) / count if count
                                         else 0.0, bucket_options=values[0].bucket_options, bucket_counts=buckets)


def _align(series: monitoring_v3.TimeSeries, start: float, end: float,
           aggregation: monitoring_v3.Aggregation) -> list[tuple[float, str, object]]:
    """(period end, value field, value) of one series' points in (start, end], newest first."""
    aligner, period = aggregation.per_series_aligner, aggregation.alignment_period.total_seconds()
    points = [p for p in series.points if start < p.interval.end_time.timestamp() <= end]
    kind = points[0]._pb.value.WhichOneof("value") if points else "int64_value"
    if aligner == Aligner.ALIGN_NONE:
        return sorted(((p.interval.end_time.timestamp(), kind, getattr(p.value, kind)) for p in points),
                      key=lambda t: -t[0])
    if period < 60:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the alignment period must be at least 60s")
    if kind == "distribution_value" and aligner != Aligner.ALIGN_DELTA:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{aligner.name} is not valid for distribution values")
    buckets: dict[float, list] = defaultdict(list)
    for p in points:
        t = p.interval.end_time.timestamp()
        buckets[min(end, start + math.ceil((t - start) / period) * period)].append(getattr(p.value, kind))
    out = []
    for t, values in sorted(buckets.items(), reverse=True):
        if aligner == Aligner.ALIGN_DELTA:
            out.append((t, kind, _merge(values, kind)))
        elif aligner == Aligner.ALIGN_RATE:
            out.append((t, "double_value", sum(values) / period))
        elif aligner == Aligner.ALIGN_MAX:
            out.append((t, kind, max(values)))
        else:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED, f"the fake does not implement {aligner.name}")
    return out


def _labels(series: monitoring_v3.TimeSeries, fields: list[str]) -> dict[str, str]:
    kept = {}
    for f in fields:
        scope, _, key = f.partition(".label.")
        labels = series.metric.labels if scope == "metric" else series.resource.labels
        if key in labels:
            kept[key] = labels[key]
    return kept


def _answer(raw: Series, request: monitoring_v3.ListTimeSeriesRequest) -> Series:
    start, end = request.interval.start_time.timestamp(), request.interval.end_time.timestamp()
    aggregation = request.aggregation
    aligned = [(s, _align(s, start, end, aggregation)) for s in raw]
    if aggregation.cross_series_reducer not in (Reducer.REDUCE_NONE, Reducer.REDUCE_SUM):
        raise Refused(grpc.StatusCode.UNIMPLEMENTED, f"the fake does not implement "
                                                     f"{aggregation.cross_series_reducer.name}")
    if aggregation.cross_series_reducer == Reducer.REDUCE_SUM:
        groups: dict[tuple, dict[float, list]] = defaultdict(lambda: defaultdict(list))
        kinds = {}
        for s, points in aligned:
            key = tuple(sorted(_labels(s, list(aggregation.group_by_fields)).items()))
            for t, kind, value in points:
                groups[key][t].append(value)
                kinds[key] = kind
        aligned = [(monitoring_v3.TimeSeries(metric=metric_pb2.Metric(labels=dict(key))),
                    [(t, kinds[key], _merge(vs, kinds[key]) if kinds[key] != "double_value" else sum(vs))
                     for t, vs in sorted(points.items(), reverse=True)]) for key, points in groups.items()]
    view_full = request.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL
    return [monitoring_v3.TimeSeries(metric=s.metric, resource=s.resource, points=[
        monitoring_v3.Point(interval={"end_time": {"seconds": int(t)}}, value={kind: value})
        for t, kind, value in points] if view_full else []) for s, points in aligned]


def parse_filter(filter_: str) -> dict[str, str]:
    """The filter's `key="value"` clauses; Refused for another form, a key given twice, or no service or metric."""
    clauses: dict[str, str] = {}
    for clause in filter_.split(" AND "):
        found = CLAUSE.match(clause)
        if not found or found.group(1) in clauses:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"filter clause not understood: {clause!r}")
        clauses[found.group(1)] = found.group(2)
    if not {"metric.type", "resource.labels.service_name"} <= set(clauses):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"no metric type or service in {filter_!r}")
    return clauses


class FakeMetricService:
    """data[(service, metric)] -> raw series, or data[(revision, metric)] for a query of one revision (`fleet
    rollout`); failing[service] is the gRPC error it answers; requests are recorded. `page_limit` series a page
    (1 by default: every query that finds several series spans pages)."""

    def __init__(self, data: dict[tuple[str, str], Series],
                 failing: dict[str, grpc.StatusCode] | None = None, page_limit: int = 1) -> None:
        self.data, self.failing, self.page_limit, self.requests = data, failing or {}, page_limit, []

    def list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext):
        self.requests.append(request)
        try:
            clauses = parse_filter(request.filter)
            service = clauses["resource.labels.service_name"]
            if service in self.failing:
                code = self.failing[service]
                context.abort(code, f"{code.name.lower().replace('_', ' ')} for {service}")
            key = (clauses.get("resource.labels.revision_name", service), clauses["metric.type"])
            # Cloud Run's metrics are all on the cloud_run_revision resource: another type matches no series
            raw = self.data.get(key, []) if clauses.get("resource.type") == "cloud_run_revision" else []
            answer = _answer(raw, request)
        except Refused as refused:
            context.abort(refused.code, str(refused))
        first = int(request.page_token or 0)
        last = first + min(request.page_size or self.page_limit, self.page_limit)
        return monitoring_v3.ListTimeSeriesResponse(time_series=answer[first:last],
                                                    next_page_token=str(last) if last < len(answer) else "")


def serve(fake: FakeMetricService) -> AbstractContextManager[str]:
    """Run `fake` on a free local port; yields host:port."""
    return serve_unary("google.monitoring.v3.MetricService", "ListTimeSeries", fake.list_time_series,
                       monitoring_v3.ListTimeSeriesRequest, monitoring_v3.ListTimeSeriesResponse)
