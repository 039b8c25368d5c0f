"""What each monitoring filter selects, series by series: the alerts' and the availability SLO's good/bad/total
filters, and every dashboard chart's, run over the series of one service and of its look-alikes (the same name in
another region, another stack's service, another metric, another code class or instance state, a Cloud Run job).
A dropped or loosened clause changes what an alert fires on or what a chart draws, so each selection is exact.
Filters are evaluated by tests/fakes/queries.py (Cloud Monitoring's filter semantics)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from components.monitoring import INSTANCES, LATENCIES, REQUESTS, STARTUPS
from fleet.program import Plan
from tests.fakes.queries import Dist, Series, chart, matches

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
SLO = "gcp:monitoring/slo:Slo"
SERVICE = "gcp:cloudrunv2/service:Service"
NAME, REGION = "demo-iowa-prod", "us-central1"


def series(metric: str, service: str = NAME, region: str = REGION, resource_type: str = "cloud_run_revision",
           **labels: str) -> Series:
    return Series(metric, {"service_name": service, "location": region}, [(60, 1)], labels, resource_type)


UNIVERSE = {
    "2xx": series(REQUESTS, response_code_class="2xx"),
    "4xx": series(REQUESTS, response_code_class="4xx"),
    "5xx": series(REQUESTS, response_code_class="5xx"),
    "latency": series(LATENCIES),
    "active": series(INSTANCES, state="active"),
    "idle": series(INSTANCES, state="idle"),
    "startups": series(STARTUPS),
    "5xx elsewhere": series(REQUESTS, region="us-east1", response_code_class="5xx"),
    "latency elsewhere": series(LATENCIES, region="us-east1"),
    "active elsewhere": series(INSTANCES, region="us-east1", state="active"),
    "5xx of dev": series(REQUESTS, service="demo-iowa-dev", response_code_class="5xx"),
    "latency of dev": series(LATENCIES, service="demo-iowa-dev"),
    "active of dev": series(INSTANCES, service="demo-iowa-dev", state="active"),
    "5xx of a job": series(REQUESTS, resource_type="cloud_run_job", response_code_class="5xx"),
}


def selected(filter_: str) -> set[str]:
    return {name for name, s in UNIVERSE.items() if matches(filter_, s)}


def alert_condition(plan: Plan, kind: str) -> dict:
    [policy] = [r.inputs for r in plan.custom(ALERT)
                if r.inputs["userLabels"]["service"] == NAME and r.inputs["userLabels"]["alert"] == kind]
    return policy["conditions"][0]["conditionThreshold"]


def test_alert_filters_select_exactly_this_services_series(small_prod):
    ratio = alert_condition(small_prod, "error-ratio")
    assert selected(ratio["filter"]) == {"5xx"}
    assert selected(ratio["denominatorFilter"]) == {"2xx", "4xx", "5xx"}
    assert [(a["perSeriesAligner"], a["crossSeriesReducer"]) for a in ratio["aggregations"]] == \
        [(a["perSeriesAligner"], a["crossSeriesReducer"]) for a in ratio["denominatorAggregations"]] == \
        [("ALIGN_RATE", "REDUCE_SUM")], "numerator and denominator aggregated alike"
    latency = alert_condition(small_prod, "latency-p95")
    assert selected(latency["filter"]) == {"latency"}
    pinned = alert_condition(small_prod, "max-instances")
    assert selected(pinned["filter"]) == {"active"}
    assert (pinned["aggregations"][0]["perSeriesAligner"], pinned["aggregations"][0]["crossSeriesReducer"]) == (
        "ALIGN_MAX", "REDUCE_SUM")


def test_availability_slo_counts_5xx_as_bad_among_all_requests(small_prod):
    slos = {r.inputs["sloId"].rsplit("-", 1)[-1]: r.inputs["requestBasedSli"] for r in small_prod.custom(SLO)
            if r.inputs["userLabels"]["service"] == NAME}
    ratio = slos["availability"]["goodTotalRatio"]
    assert set(ratio) == {"badServiceFilter", "totalServiceFilter"}, "bad and total: 4xx count as good"
    assert selected(ratio["badServiceFilter"]) == {"5xx"}
    assert selected(ratio["totalServiceFilter"]) == {"2xx", "4xx", "5xx"}
    assert selected(slos["latency"]["distributionCut"]["distributionFilter"]) == {"latency"}


def widgets(plan: Plan) -> dict[str, dict]:
    (resource,) = plan.custom("gcp:monitoring/dashboard:Dashboard")
    tiles = json.loads(resource.inputs["dashboardJson"])["mosaicLayout"]["tiles"]
    return {t["widget"]["title"].split(" by region")[0]: t["widget"] for t in tiles}


def stack_series(plan: Plan, metric: str, value: float | Dist, **labels: str) -> list[Series]:
    return [Series(metric, {"service_name": r.inputs["name"], "location": r.inputs["location"]}, [(60, value)],
                   labels) for r in plan.custom(SERVICE)]


def look_alikes(metric: str, value: float | Dist, **labels: str) -> list[Series]:
    """The same metric of another stack's services, of a job with a service's name. (A chart's data set matches its
    regions and its services' names separately, so a service's name in another region of the same data set would be
    drawn: names carry the region's city, so the fleet never makes one.)"""
    return [Series(metric, {"service_name": "demo-iowa-dev", "location": REGION}, [(60, value)], labels),
            Series(metric, {"service_name": "demo-south-carolina-dev", "location": "us-east1"}, [(60, value)], labels),
            Series(metric, {"service_name": NAME, "location": REGION}, [(60, value)], labels, "cloud_run_job")]


def test_error_and_instance_charts_draw_only_the_stacks_5xx_and_active_instances(small_prod):
    charts = widgets(small_prod)
    per_region = Counter(r.inputs["location"] for r in small_prod.custom(SERVICE))
    requests = [*stack_series(small_prod, REQUESTS, 600, response_code_class="2xx"),
                *stack_series(small_prod, REQUESTS, 6, response_code_class="5xx"),
                *look_alikes(REQUESTS, 6000, response_code_class="5xx")]
    # a minute of 6 errors per service: 0.1 errors/s per service, summed by region
    assert chart(charts["5xx errors/s"], requests) == {r: {60: pytest.approx(0.1 * n)} for r, n in per_region.items()}
    assert chart(charts["Requests/s"], requests) == {r: {60: pytest.approx(10.1 * n)} for r, n in per_region.items()}
    instances = [*stack_series(small_prod, INSTANCES, 3, state="active"),
                 *stack_series(small_prod, INSTANCES, 50, state="idle"), *look_alikes(INSTANCES, 70, state="active")]
    assert chart(charts["Active instances"], instances) == {r: {60: 3 * n} for r, n in per_region.items()}


def test_latency_charts_select_only_the_stacks_latencies(small_prod):
    charts = widgets(small_prod)
    mine = stack_series(small_prod, LATENCIES, Dist(1))
    others = [*look_alikes(LATENCIES, Dist(1)), *stack_series(small_prod, REQUESTS, 1),
              *stack_series(small_prod, STARTUPS, Dist(1))]
    for title, percentile in (("p50 latency", "REDUCE_PERCENTILE_50"), ("p95 latency", "REDUCE_PERCENTILE_95")):
        data_sets = [d["timeSeriesQuery"]["timeSeriesFilter"] for d in charts[title]["xyChart"]["dataSets"]]
        assert {(d["aggregation"]["perSeriesAligner"], d["aggregation"]["crossSeriesReducer"])
                for d in data_sets} == {("ALIGN_DELTA", percentile)}, title
        drawn = [s for s in [*mine, *others] if any(matches(d["filter"], s) for d in data_sets)]
        assert drawn == mine, title
