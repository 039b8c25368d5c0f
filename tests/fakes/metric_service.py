"""A fake `google.monitoring.v3.MetricService` serving canned series per (service, metric type)."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

import grpc
from google.api import distribution_pb2, metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3

from tests.fakes import serve_unary

Series = list[monitoring_v3.TimeSeries]
FILTER = re.compile(r'metric\.type="([^"]+)".*service_name="([^"]+)".*location="([^"]+)"')
REVISION = re.compile(r'revision_name="([^"]+)"')


def count_series(code_class: str, values: list[int], start: int = 1_700_000_000,
                 label: str = "response_code_class") -> monitoring_v3.TimeSeries:
    points = [monitoring_v3.Point(interval={"end_time": {"seconds": start + 60 * i}},
                                  value={"int64_value": v}) for i, v in enumerate(values)]
    return monitoring_v3.TimeSeries(metric=metric_pb2.Metric(labels={label: code_class}),
                                    resource=monitored_resource_pb2.MonitoredResource(type="cloud_run_revision"),
                                    points=points)


def gauge_series(values: list[int], state: str = "active", start: int = 1_700_000_000) -> monitoring_v3.TimeSeries:
    """instance_count: one series per instance state (active, idle)."""
    return count_series(state, values, start, label="state")


def distribution_series(counts: list[list[int]], mean: float, scale: float = 1.0, growth: float = 2.0,
                        start: int = 1_700_000_000) -> monitoring_v3.TimeSeries:
    """One point per bucket-count list, exponential buckets (scale, growth), each point with `mean`."""
    options = distribution_pb2.Distribution.BucketOptions(exponential_buckets=distribution_pb2.Distribution.
                                                          BucketOptions.Exponential(
                                                              num_finite_buckets=len(counts[0]) - 2,
                                                              growth_factor=growth, scale=scale))
    points = [monitoring_v3.Point(interval={"end_time": {"seconds": start + 60 * i}},
                                  value={"distribution_value": distribution_pb2.Distribution(
                                      count=sum(c), mean=mean, bucket_options=options, bucket_counts=c)})
              for i, c in enumerate(counts)]
    return monitoring_v3.TimeSeries(points=points)


class FakeMetricService:
    """data[(service, metric)] -> series, or data[(revision, metric)] for a query of one revision (`fleet rollout`);
    failing[service] is the gRPC error it answers; requests are recorded."""

    def __init__(self, data: dict[tuple[str, str], Series],
                 failing: dict[str, grpc.StatusCode] | None = None) -> None:
        self.data, self.failing, self.requests = data, failing or {}, []

    def list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext):
        self.requests.append(request)
        metric, service, _location = FILTER.search(request.filter).groups()
        if service in self.failing:
            code = self.failing[service]
            context.abort(code, f"{code.name.lower().replace('_', ' ')} for {service}")
        revision = REVISION.search(request.filter)
        key = (revision.group(1) if revision else service, metric)
        return monitoring_v3.ListTimeSeriesResponse(time_series=self.data.get(key, []))


def serve(fake: FakeMetricService) -> AbstractContextManager[str]:
    """Run `fake` on a free local port; yields host:port."""
    return serve_unary("google.monitoring.v3.MetricService", "ListTimeSeries", fake.list_time_series,
                       monitoring_v3.ListTimeSeriesRequest, monitoring_v3.ListTimeSeriesResponse)
