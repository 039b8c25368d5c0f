"""Alerts, uptime checks, SLOs and the dashboard, as the mocked program declares them."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from components.errors import FleetError
from components.monitoring import FILTER_MAX_CHARS, REQUESTS, STARTUPS, ChartScope, chart_scopes
from fleet.cli import main
from fleet.program import Plan, evaluate
from policy.facts import load_facts
from tests.conftest import prod_in, region_entry
from tests.fakes.queries import Dist, Series, chart, time_series_filter
from tests.stacks import plan_stack, three_models_everywhere

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
SLO = "gcp:monitoring/slo:Slo"
SERVICE = "gcp:cloudrunv2/service:Service"


def alerts(plan: Plan, service: str) -> dict[str, dict]:
    return {r.inputs["userLabels"]["alert"]: r.inputs for r in plan.custom(ALERT)
            if r.inputs["userLabels"]["service"] == service}


def threshold(policy: dict) -> dict:
    return policy["conditions"][0]["conditionThreshold"]


def test_every_service_has_its_three_alerts_on_itself_only(prod_plan):
    for service in prod_plan.custom(SERVICE):
        name, region = service.inputs["name"], service.inputs["location"]
        policies = alerts(prod_plan, name)
        assert set(policies) == {"error-ratio", "latency-p95", "max-instances"}, name
        for policy in policies.values():
            assert policy["userLabels"]["region"] == region and policy["userLabels"]["managed-by"] == "yolo-fleet"
            f = threshold(policy)["filter"]
            assert f'resource.labels.service_name = "{name}"' in f and f'resource.labels.location = "{region}"' in f
            assert threshold(policy)["comparison"] == "COMPARISON_GT"
            assert service.name in policy["documentation"]["content"], "the runbook names the endpoint"
            assert f"fleet logs --endpoint {service.name}" in policy["documentation"]["content"]
            assert policy["displayName"].startswith(f"{service.name} (prod): "), "titled with the endpoint's name"


def test_alert_conditions_measure_the_right_thing(prod_plan):
    policies = alerts(prod_plan, "demo-iowa-prod")
    ratio = threshold(policies["error-ratio"])
    assert 'response_code_class = "5xx"' in ratio["filter"] and "run.googleapis.com/request_count" in ratio["filter"]
    assert "response_code_class" not in ratio["denominatorFilter"], "5xx over all requests"
    assert ratio["thresholdValue"] == 0.05 and ratio["duration"] == "300s"
    latency = threshold(policies["latency-p95"])
    assert latency["aggregations"][0]["perSeriesAligner"] == "ALIGN_PERCENTILE_95"
    assert "run.googleapis.com/request_latencies" in latency["filter"] and latency["thresholdValue"] == 2000
    pinned = threshold(policies["max-instances"])
    assert 'metric.labels.state = "active"' in pinned["filter"]
    assert pinned["thresholdValue"] == 9.5, "fires once active instances reach max_instances (10)"
    assert threshold(alerts(prod_plan, "demo-eemshaven-prod")["max-instances"])["thresholdValue"] == 19.5


def test_thresholds_follow_overrides(write_catalog):
    path = write_catalog(lambda d: region_entry(d, "us-east1").setdefault("overrides", {}).update(
        alert_latency_p95_ms=3500, alert_duration_seconds=600, alert_error_ratio=0.01))
    plan = evaluate("prod", catalog=path, config_overrides=prod_in())
    east = alerts(plan, "demo-south-carolina-prod")
    assert threshold(east["latency-p95"])["thresholdValue"] == 3500
    assert threshold(east["error-ratio"])["thresholdValue"] == 0.01
    assert {threshold(p)["duration"] for p in east.values()} == {"600s"}
    assert threshold(alerts(plan, "demo-oregon-prod")["latency-p95"])["thresholdValue"] == 2000
    plan = evaluate("prod", catalog=path, config_overrides={**prod_in(), "yolo-fleet:forced_settings": json.dumps(
        {"alert_latency_p95_ms": 900})})
    assert threshold(alerts(plan, "demo-south-carolina-prod")["latency-p95"])["thresholdValue"] == 900, "forced wins"


def test_alert_duration_must_be_whole_minutes(write_catalog, capsys):
    path = write_catalog(lambda d: d["defaults"].update(alert_duration_seconds=90))
    assert main(["plan", "--catalog", str(path)]) == 2
    assert "alert_duration_seconds must be a multiple of 60 (got 90)" in capsys.readouterr().err


def test_uptime_checks_only_where_instances_stay_warm(prod_plan):
    checks = {r.inputs["userLabels"]["service"]: r.inputs for r in prod_plan.custom(UPTIME)}
    warm = {s.inputs["name"] for s in prod_plan.custom(SERVICE)
            if s.inputs["template"]["scaling"]["minInstanceCount"] > 0}
    assert set(checks) == warm == {"demo-iowa-prod", "shared-iowa-prod", "shared-st-ghislain-prod",
                                   "shared-changhua-county-prod"}
    assert checks["demo-iowa-prod"]["monitoredResource"]["labels"]["host"] == \
        "demo-iowa-prod-PROJECT_NUMBER.us-central1.run.app"
    # shared services only accept the balancer's traffic: probe them through their public host
    assert checks["shared-st-ghislain-prod"]["monitoredResource"]["labels"]["host"] == "eu.inference.example.com"
    assert all(c["httpCheck"]["path"] == "/health" and c["httpCheck"]["useSsl"] for c in checks.values())


def test_raising_min_instances_adds_an_uptime_check(write_catalog):
    plan = evaluate("prod", catalog=write_catalog(
        lambda d: region_entry(d, "asia-northeast1").setdefault("overrides", {}).update(min_instances=1)),
        config_overrides=prod_in())
    assert "demo-tokyo-prod" in {r.inputs["userLabels"]["service"] for r in plan.custom(UPTIME)}


def test_slos_when_enabled(prod_plan, dev_plan):
    slos = [r.inputs for r in prod_plan.custom(SLO) if r.inputs["userLabels"]["service"] == "demo-iowa-prod"]
    assert sorted(s["goal"] for s in slos) == [0.95, 0.995]
    latency = next(s for s in slos if "distributionCut" in s["requestBasedSli"])
    assert latency["requestBasedSli"]["distributionCut"]["range"]["max"] == 1000
    assert 'service_name = "demo-iowa-prod"' in latency["requestBasedSli"]["distributionCut"]["distributionFilter"]
    assert len(prod_plan.custom(SLO)) == 2 * len(prod_plan.custom(SERVICE))
    assert not dev_plan.custom(SLO), "off unless enabled"


def dashboard(plan: Plan) -> list[dict]:
    (resource,) = plan.custom("gcp:monitoring/dashboard:Dashboard")
    return [t["widget"] for t in json.loads(resource.inputs["dashboardJson"])["mosaicLayout"]["tiles"]]


def queries(widget: dict) -> list[str]:
    """Each data set's filter or PromQL text."""
    return [ds["timeSeriesQuery"].get("prometheusQuery") or ds["timeSeriesQuery"]["timeSeriesFilter"]["filter"]
            for ds in widget["xyChart"]["dataSets"]]


def stack_services(plan: Plan) -> dict[str, str]:
    return {r.inputs["name"]: r.inputs["location"] for r in plan.custom(SERVICE)}


def test_one_dashboard_per_stack(prod_plan):
    widgets = dashboard(prod_plan)
    assert [w["title"] for w in widgets] == [
        "Requests/s by region", "5xx errors/s by region", "p50 latency by region", "p95 latency by region",
        "Active instances by region", "Cold starts by region (container startups per minute)",
        "Balancer requests/s by backend region", "Balancer 5xx/s by backend region",
        "Balancer p95 latency by backend region"]
    for w in widgets:
        for query in queries(w):
            assert "user_labels" not in query, "Cloud Run's built-in metrics carry no user labels"
    assert "container_startup_latencies_count" in queries(widgets[5])[0]


def test_dashboard_charts_exactly_the_stacks_services(prod_plan):
    services = stack_services(prod_plan)
    # 1 request/s on each of the stack's services, and 7/s on another stack's service in Iowa
    data = [Series(REQUESTS, {"service_name": name, "location": region}, [(60, 60), (120, 60)],
                   {"response_code_class": "2xx"}) for name, region in services.items()]
    data.append(Series(REQUESTS, {"service_name": "other-iowa", "location": "us-central1"}, [(60, 420)]))
    data.append(Series(REQUESTS, {"service_name": "demo-iowa-dev", "location": "us-central1"}, [(60, 420)]))
    lines = chart(dashboard(prod_plan)[0], data)
    per_region = Counter(services.values())
    assert lines == {region: {60: float(n), 120: float(n)} for region, n in per_region.items()}
    assert lines["us-central1"][60] == 2.0, "demo-iowa and shared-iowa of prod, not other-iowa or dev's"


def startups(name: str, region: str, counts: list[int]) -> Series:
    """startup_latencies of one service: one DELTA distribution point per minute, `count` startups in it."""
    return Series(STARTUPS, {"service_name": name, "location": region},
                  [(60 * (i + 1), Dist(c)) for i, c in enumerate(counts) if c])


def test_cold_starts_chart_counts_startups_not_series(prod_plan):
    data = [startups("demo-iowa-prod", "us-central1", [3, 1, 0]),
            startups("shared-iowa-prod", "us-central1", [2, 0, 4]),
            startups("demo-st-ghislain-prod", "europe-west1", [5, 5, 5]),
            startups("demo-iowa-dev", "us-central1", [9, 9, 9])]  # the dev stack's, in the same project
    cold_starts = dashboard(prod_plan)[5]
    assert chart(cold_starts, data) == {"us-central1": {60: 5, 120: 1, 180: 4},
                                        "europe-west1": {60: 5, 120: 5, 180: 5}}
    # The former query, ALIGN_DELTA then REDUCE_COUNT on the distribution, counted series with a point
    old = {"filter": queries(dashboard(prod_plan)[0])[0].replace(REQUESTS, STARTUPS), "aggregation": {
        "alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_DELTA", "crossSeriesReducer": "REDUCE_COUNT",
        "groupByFields": ["resource.label.location"]}}
    assert time_series_filter(old, data) == {"us-central1": {60: 2, 120: 1, 180: 1},
                                             "europe-west1": {60: 1, 120: 1, 180: 1}}


def test_dashboard_filters_fit_with_three_models_in_every_region():
    plan = plan_stack("prod", three_models_everywhere())  # names of 24 characters, the longest filters
    services = stack_services(plan)
    assert len(services) == 3 * 43 + 3
    widgets = dashboard(plan)
    for w in widgets:
        assert all(len(q) <= FILTER_MAX_CHARS for q in queries(w)), w["title"]
    assert len(queries(widgets[0])) > 1, "more than one data set was needed"
    # every service drawn once, each region by one data set (chart() refuses a region drawn twice)
    data = [Series(REQUESTS, {"service_name": name, "location": region}, [(60, 60)])
            for name, region in services.items()]
    assert chart(widgets[0], data) == {region: {60: float(n)} for region, n in Counter(services.values()).items()}
    cold = [startups(name, region, [1]) for name, region in services.items()]
    assert chart(widgets[5], cold) == {region: {60: n} for region, n in Counter(services.values()).items()}


def test_notification_channels_from_config():
    channels = [{"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@example.com"}}]
    plan = evaluate("dev", config_overrides={"yolo-fleet:notification_channels": json.dumps(channels)})
    (channel,) = plan.custom("gcp:monitoring/notificationChannel:NotificationChannel")
    assert channel.inputs["labels"] == {"email_address": "oncall@example.com"}
    expected = f"projects/my-gcp-project-dev/notificationChannels/{channel.name}"
    assert all(p.inputs["notificationChannels"] == [expected] for p in plan.custom(ALERT))


@pytest.mark.parametrize(("channels", "message"), [
    ([{"type": "email", "display_name": "On-call", "labels": {}}], "needs 'email_address'"),
    ([{"type": "carrier-pigeon", "display_name": "x", "labels": {}}], "notification_channels[0].type"),
])
def test_bad_notification_channel(channels, message):
    with pytest.raises(FleetError, match=re.escape(message)):
        evaluate("dev", config_overrides={"yolo-fleet:notification_channels": json.dumps(channels)})


def test_plan_shows_what_watches_each_service(capsys):
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^demo-iowa\s.*\s3 alerts, uptime, 2 SLOs\s", out, re.M)
    assert re.search(r"^demo-tokyo\s.*\s3 alerts, 2 SLOs\s", out, re.M)


@pytest.mark.parametrize("spare", [0, 20, 160])
def test_chart_scopes_keep_every_filter_within_the_limit_and_draw_each_service_once(spare):
    services = load_facts("prod").layout.services
    # the tightest limit that any scope can meet: one region with its one longest-named service
    room = max(len(s.region.id) + len(s.service_name) for s in services) + spare
    limit = len(ChartScope((), ()).filter(STARTUPS, 'metric.labels.response_code_class = "5xx"')) + room
    scopes = chart_scopes(services, limit)
    drawn = [name for scope in scopes for name in scope.services]
    assert sorted(drawn) == sorted(s.service_name for s in services)
    for scope in scopes:
        assert len(scope.filter(STARTUPS, 'metric.labels.response_code_class = "5xx"')) <= limit
        assert len(scope.startups_promql()) <= limit
    regions = [region for scope in scopes for region in scope.locations]
    split = {r for r in regions if regions.count(r) > 1}
    # a region is split only when it cannot fit alone (its id and its services' names joined by '|')
    by_region: dict[str, list[str]] = {}
    for s in services:
        by_region.setdefault(s.region.id, []).append(s.service_name)
    too_big = {r for r, names in by_region.items() if len(r) + len("|".join(names)) > room}
    assert split == too_big
    assert split if spare == 0 else True, "the tightest room splits the regions with two services"
    assert not split if spare == 160 else True, "ample room splits none"
