"""What a dashboard chart would draw: a small evaluator of Cloud Monitoring's documented query semantics.

Enough of the Monitoring filter language, of the aligners/reducers (google.monitoring.v3.Aggregation) and of
PromQL over Cloud Monitoring metrics to run this project's chart queries over fake DELTA series. Anything
else raises, so a chart that drifts from what is evaluated here fails loudly instead of passing.

Documented semantics followed:
- ALIGN_DELTA: the change over each alignment period (for DELTA series: the sum of its points); valid for
  numeric and distribution values, and keeps the value type.
- ALIGN_RATE: that change per second (numeric values). ALIGN_COUNT: valid only for numeric/Boolean values.
- REDUCE_SUM: the sum across series (distributions merge: counts add). REDUCE_COUNT: "the number of data
  points across time series for each alignment period", i.e. one per series with a value.
- PromQL: a distribution metric reads as a histogram whose `_count` is its number of values; metric names
  map `/` (first) to `:` and other special characters to `_` (cloud.google.com/monitoring/promql/promql-mapping).
  Assumed, not documented there: `increase(v[w])` of a DELTA series is the sum of its points ending within
  the window (a window as long as the points' interval, as here, has no extrapolation to do).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

Value = float | int


@dataclass(frozen=True)
class Dist:
    """A distribution value; only its count matters here."""

    count: int

    def __add__(self, other: Dist) -> Dist:
        return Dist(self.count + other.count)


@dataclass(frozen=True)
class Series:
    metric: str
    resource_labels: dict[str, str]
    points: list[tuple[int, Value | Dist]]  # (end time in seconds, value), DELTA points
    metric_labels: dict[str, str] = field(default_factory=dict)
    resource_type: str = "cloud_run_revision"


Result = dict[str, dict[int, Any]]  # group (location) -> period end -> value

_CLAUSE = re.compile(r'^(\S+) = (?:"([^"]*)"|monitoring\.regex\.full_match\("([^"]*)"\))$')


def _field(series: Series, key: str) -> str | None:
    if key == "resource.type":
        return series.resource_type
    if key == "metric.type":
        return series.metric
    for prefix, labels in (("resource.labels.", series.resource_labels), ("metric.labels.", series.metric_labels)):
        if key.startswith(prefix):
            return labels.get(key.removeprefix(prefix))
    raise ValueError(f"filter key not understood: {key}")


def matches(filter_: str, series: Series) -> bool:
    for clause in filter_.split(" AND "):
        found = _CLAUSE.match(clause)
        if not found:
            raise ValueError(f"filter clause not understood: {clause!r}")
        key, exact, pattern = found.groups()
        value = _field(series, key)
        if value is None or (value != exact if pattern is None else not re.fullmatch(pattern, value)):
            return False
    return True


def _align(series: Series, aligner: str, period: int) -> dict[int, Value | Dist]:
    buckets: dict[int, list[Value | Dist]] = defaultdict(list)
    for end, value in series.points:
        buckets[math.ceil(end / period) * period].append(value)
    out: dict[int, Value | Dist] = {}
    for end, values in buckets.items():
        if aligner == "ALIGN_DELTA":
            out[end] = sum(values[1:], values[0])
        elif aligner in ("ALIGN_RATE", "ALIGN_COUNT", "ALIGN_MAX") and any(isinstance(v, Dist) for v in values):
            raise ValueError(f"{aligner} is not valid for distribution values")
        elif aligner == "ALIGN_RATE":
            out[end] = sum(values) / period
        elif aligner == "ALIGN_COUNT":
            out[end] = len(values)
        elif aligner == "ALIGN_MAX":
            out[end] = max(values)
        else:
            raise NotImplementedError(aligner)
    return out


def _reduce(reducer: str, values: list[Value | Dist]) -> Value | Dist:
    if reducer == "REDUCE_SUM":
        return sum(values[1:], values[0])
    if reducer == "REDUCE_COUNT":
        return len(values)
    raise NotImplementedError(reducer)


def time_series_filter(query: dict[str, Any], data: list[Series]) -> Result:
    """A dashboard `timeSeriesFilter` (filter + aggregation) over `data`."""
    aggregation = query["aggregation"]
    period = int(aggregation["alignmentPeriod"].removesuffix("s"))
    (group_by,) = aggregation["groupByFields"]
    label = group_by.removeprefix("resource.label.")
    grouped: dict[str, dict[int, list[Value | Dist]]] = defaultdict(lambda: defaultdict(list))
    for series in data:
        if matches(query["filter"], series):
            for end, value in _align(series, aggregation["perSeriesAligner"], period).items():
                grouped[series.resource_labels[label]][end].append(value)
    return {g: {end: _reduce(aggregation["crossSeriesReducer"], vs) for end, vs in ends.items()}
            for g, ends in grouped.items()}


_PROMQL = re.compile(r'^sum by \((\w+)\) \(increase\(([\w:]+)\{([^}]*)\}\[(\d+)m\]\)\)$')
_MATCHER = re.compile(r'^(\w+)(=~|=)"([^"]*)"$')


def promql_name(metric: str) -> str:
    domain, path = metric.split("/", 1)
    return re.sub(r"[^A-Za-z0-9_:]", "_", f"{domain}:{path}")


def prometheus_query(query: str, data: list[Series], step: int = 60) -> Result:
    """`sum by (label) (increase(metric_count{matchers}[Nm]))` over `data`, evaluated at each step end."""
    found = _PROMQL.match(query)
    if not found:
        raise ValueError(f"PromQL not understood: {query!r}")
    by, name, matchers, minutes = found.groups()
    window = int(minutes) * 60
    selected = []
    for series in data:
        if not name.endswith("_count") or promql_name(series.metric) != name.removesuffix("_count"):
            continue
        labels = {"monitored_resource": series.resource_type, **series.resource_labels, **series.metric_labels}
        ok = True
        for matcher in matchers.split(","):
            parts = _MATCHER.match(matcher)
            if not parts:
                raise ValueError(f"PromQL matcher not understood: {matcher!r}")
            key, op, want = parts.groups()
            have = labels.get(key, "")
            ok = ok and (have == want if op == "=" else re.fullmatch(want, have) is not None)
        if ok:
            selected.append(series)
    ends = sorted({math.ceil(end / step) * step for s in selected for end, _ in s.points})
    out: Result = defaultdict(dict)
    for series in selected:
        for t in ends:
            counts = [v.count for end, v in series.points if isinstance(v, Dist) and t - window < end <= t]
            group = out[series.resource_labels[by]]
            group[t] = group.get(t, 0) + sum(counts)
    return dict(out)


def chart(widget: dict[str, Any], data: list[Series]) -> Result:
    """What an xyChart widget draws over `data`: its data sets' lines, by group."""
    out: Result = {}
    for data_set in widget["xyChart"]["dataSets"]:
        query = data_set["timeSeriesQuery"]
        lines = (prometheus_query(query["prometheusQuery"], data) if "prometheusQuery" in query
                 else time_series_filter(query["timeSeriesFilter"], data))
        for group, values in lines.items():
            if group in out:
                raise ValueError(f"{group} is drawn by two data sets")
            out[group] = values
    return out
