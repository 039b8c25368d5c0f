"""Alerts, uptime checks, SLOs and the dashboard, as the mocked program declares them (over four regions: every
case shows there, tests/conftest.py MONITORING_REGIONS) or as monitoring.py's builders make them."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from components.errors import FleetError
from components.layout import ServicePlan
from components.monitoring import FILTER_MAX_CHARS, REQUESTS, STARTUPS, ChartScope, chart_scopes, dashboard_document
from fleet.cli import main
from fleet.program import Plan, evaluate, stack_config, stack_layout
from policy.facts import load_facts
from tests.conftest import monitoring_regions, region_entry
from tests.fakes.queries import Dist, Series, chart, time_series_filter

ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
SLO = "gcp:monitoring/slo:Slo"
SERVICE = "gcp:cloudrunv2/service:Service"


def alerts(plan: Plan, service: str) -> dict[str, dict]:
    return {r.inputs["userLabels"]["alert"]: r.inputs for r in plan.custom(ALERT)
            if r.inputs["userLabels"]["service"] == service}


def threshold(policy: dict) -> dict:
    return policy["conditions"][0]["conditionThreshold"]


def test_every_service_has_its_three_alerts_on_itself_only(small_prod):
    for service in small_prod.custom(SERVICE):
        name, region = service.inputs["name"], service.inputs["location"]
        policies = alerts(small_prod, name)
        assert set(policies) == {"error-ratio", "latency-p95", "max-instances"}, name
        for policy in policies.values():
            assert policy["userLabels"]["region"] == region and policy["userLabels"]["managed-by"] == "yolo-fleet"
            f = threshold(policy)["filter"]
            assert f'resource.labels.service_name = "{name}"' in f and f'resource.labels.location = "{region}"' in f
            assert threshold(policy)["comparison"] == "COMPARISON_GT"
            assert service.name in policy["documentation"]["content"], "the runbook names the endpoint"
            assert f"fleet logs --endpoint {service.name}" in policy["documentation"]["content"]
            assert policy["displayName"].startswith(f"{service.name} (prod): "), "titled with the endpoint's name"
    assert len(small_prod.custom(ALERT)) == 3 * len(small_prod.custom(SERVICE)), "no host alerts without a domain"


def test_alert_conditions_measure_the_right_thing(small_prod):
    policies = alerts(small_prod, "demo-iowa-prod")
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
    assert threshold(alerts(small_prod, "demo-eemshaven-prod")["max-instances"])["thresholdValue"] == 19.5


def test_thresholds_follow_overrides(write_catalog):
    def overridden(data: dict) -> None:
        monitoring_regions(data)
        region_entry(data, "europe-west1").setdefault("overrides", {}).update(
            alert_latency_p95_ms=3500, alert_duration_seconds=600, alert_error_ratio=0.01)

    path = write_catalog(overridden)
    plan = evaluate("prod", catalog=path)
    belgium = alerts(plan, "demo-st-ghislain-prod")
    assert threshold(belgium["latency-p95"])["thresholdValue"] == 3500
    assert threshold(belgium["error-ratio"])["thresholdValue"] == 0.01
    assert {threshold(p)["duration"] for p in belgium.values()} == {"600s"}
    assert threshold(alerts(plan, "demo-eemshaven-prod")["latency-p95"])["thresholdValue"] == 2000
    plan = evaluate("prod", catalog=path, config_overrides={"yolo-fleet:forced_settings": json.dumps(
        {"alert_latency_p95_ms": 900})})
    assert threshold(alerts(plan, "demo-st-ghislain-prod")["latency-p95"])["thresholdValue"] == 900, "forced wins"


def test_alert_duration_must_be_whole_minutes(write_catalog, capsys):
    path = write_catalog(lambda d: d["defaults"].update(alert_duration_seconds=90))
    assert main(["plan", "--catalog", str(path)]) == 2
    assert "alert_duration_seconds must be a multiple of 60 (got 90)" in capsys.readouterr().err


def test_uptime_checks_only_where_instances_stay_warm(small_prod):
    checks = {r.inputs["userLabels"]["service"]: r.inputs for r in small_prod.custom(UPTIME)}
    warm = {s.inputs["name"] for s in small_prod.custom(SERVICE)
            if s.inputs["template"]["scaling"]["minInstanceCount"] > 0}
    assert set(checks) == warm == {"demo-iowa-prod", "shared-iowa-prod", "shared-st-ghislain-prod",
                                   "shared-changhua-county-prod"}
    assert checks["demo-iowa-prod"]["monitoredResource"]["labels"]["host"] == \
        "demo-iowa-prod-PROJECT_NUMBER.us-central1.run.app"
    # shared services only accept the balancer's traffic: probe them through their public host
    assert checks["shared-st-ghislain-prod"]["monitoredResource"]["labels"]["host"] == "eu.inference.example.com"
    assert all(c["httpCheck"]["path"] == "/health" and c["httpCheck"]["useSsl"] for c in checks.values())


def test_raising_min_instances_adds_an_uptime_check(write_catalog):
    def warm_eemshaven(data: dict) -> None:
        monitoring_regions(data)
        region_entry(data, "europe-west4").setdefault("overrides", {}).update(min_instances=1)

    plan = evaluate("prod", catalog=write_catalog(warm_eemshaven))
    assert "demo-eemshaven-prod" in {r.inputs["userLabels"]["service"] for r in plan.custom(UPTIME)}


def test_slos_when_enabled(small_prod, dev_plan):
    slos = [r.inputs for r in small_prod.custom(SLO) if r.inputs["userLabels"]["service"] == "demo-iowa-prod"]
    assert sorted(s["goal"] for s in slos) == [0.95, 0.995]
    latency = next(s for s in slos if "distributionCut" in s["requestBasedSli"])
    assert latency["requestBasedSli"]["distributionCut"]["range"]["max"] == 1000
    assert 'service_name = "demo-iowa-prod"' in latency["requestBasedSli"]["distributionCut"]["distributionFilter"]
    assert len(small_prod.custom(SLO)) == 2 * len(small_prod.custom(SERVICE))
    assert not dev_plan.custom(SLO), "off unless enabled"


def dashboard(plan: Plan) -> list[dict]:
    (resource,) = plan.custom("gcp:monitoring/dashboard:Dashboard")
    return [t["widget"] for t in json.loads(resource.inputs["dashboardJson"])["mosaicLayout"]["tiles"]]


def document_widgets(services: Sequence[ServicePlan], url_map: str | None = None) -> list[dict]:
    """The dashboard monitoring.py builds for these services, without planning the program."""
    return [t["widget"] for t in dashboard_document("prod", services, url_map)["mosaicLayout"]["tiles"]]


def queries(widget: dict) -> list[str]:
    """Each data set's filter or PromQL text."""
    return [ds["timeSeriesQuery"].get("prometheusQuery") or ds["timeSeriesQuery"]["timeSeriesFilter"]["filter"]
            for ds in widget["xyChart"]["dataSets"]]


def stack_services(plan: Plan) -> dict[str, str]:
    return {r.inputs["name"]: r.inputs["location"] for r in plan.custom(SERVICE)}


def test_one_dashboard_per_stack(small_prod):
    widgets = dashboard(small_prod)
    assert [w["title"] for w in widgets] == [
        "Requests/s by region", "5xx errors/s by region", "p50 latency by region", "p95 latency by region",
        "Active instances by region", "Cold starts by region (container startups per minute)",
        "Balancer requests/s by backend region", "Balancer 5xx/s by backend region",
        "Balancer p95 latency by backend region"]
    for w in widgets:
        for query in queries(w):
            assert "user_labels" not in query, "Cloud Run's built-in metrics carry no user labels"
    assert "container_startup_latencies_count" in queries(widgets[5])[0]


def test_dashboard_charts_exactly_the_stacks_services(small_prod):
    services = stack_services(small_prod)
    # 1 request/s on each of the stack's services, and 7/s on another stack's service in Iowa
    data = [Series(REQUESTS, {"service_name": name, "location": region}, [(60, 60), (120, 60)],
                   {"response_code_class": "2xx"}) for name, region in services.items()]
    data.append(Series(REQUESTS, {"service_name": "other-iowa", "location": "us-central1"}, [(60, 420)]))
    data.append(Series(REQUESTS, {"service_name": "demo-iowa-dev", "location": "us-central1"}, [(60, 420)]))
    lines = chart(dashboard(small_prod)[0], data)
    per_region = Counter(services.values())
    assert lines == {region: {60: float(n), 120: float(n)} for region, n in per_region.items()}
    assert lines["us-central1"][60] == 2.0, "demo-iowa and shared-iowa of prod, not other-iowa or dev's"


def startups(name: str, region: str, counts: list[int]) -> Series:
    """startup_latencies of one service: one DELTA distribution point per minute, `count` startups in it."""
    return Series(STARTUPS, {"service_name": name, "location": region},
                  [(60 * (i + 1), Dist(c)) for i, c in enumerate(counts) if c])


def test_cold_starts_chart_counts_startups_not_series(small_catalog):
    widgets = document_widgets(stack_layout("prod", catalog=small_catalog).layout.services)
    data = [startups("demo-iowa-prod", "us-central1", [3, 1, 0]),
            startups("shared-iowa-prod", "us-central1", [2, 0, 4]),
            startups("demo-st-ghislain-prod", "europe-west1", [5, 5, 5]),
            startups("demo-iowa-dev", "us-central1", [9, 9, 9])]  # the dev stack's, in the same project
    assert chart(widgets[5], data) == {"us-central1": {60: 5, 120: 1, 180: 4},
                                       "europe-west1": {60: 5, 120: 5, 180: 5}}
    # The former query, ALIGN_DELTA then REDUCE_COUNT on the distribution, counted series with a point
    old = {"filter": queries(widgets[0])[0].replace(REQUESTS, STARTUPS), "aggregation": {
        "alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_DELTA", "crossSeriesReducer": "REDUCE_COUNT",
        "groupByFields": ["resource.label.location"]}}
    assert time_series_filter(old, data) == {"us-central1": {60: 2, 120: 1, 180: 1},
                                             "europe-west1": {60: 1, 120: 1, 180: 1}}


def test_dashboard_filters_fit_with_three_models_in_every_region():
    models = [{"name": f"{kind}-{'x' * (24 - len(kind) - 1)}", "file": "models/demo-e2e.onnx", "regions": "all"}
              for kind in ("detect", "segment", "pose")]
    config = {**stack_config("prod"), "yolo-fleet:models": json.dumps(models)}
    plans = stack_layout("prod", config=config).layout.services
    services = {s.service_name: s.region.id for s in plans}
    assert len(services) == 3 * 43 + 3
    widgets = document_widgets(plans, url_map="yolo-fleet-prod")
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


def test_plan_shows_what_watches_each_service(small_prod, small_catalog: Path, capsys):
    assert main(["plan", "--catalog", str(small_catalog)]) == 0  # small_prod's plan, from the run's cache
    out = capsys.readouterr().out
    assert re.search(r"^demo-iowa\s.*\s3 alerts, uptime, 2 SLOs\s", out, re.M)
    assert re.search(r"^demo-st-ghislain\s.*\s3 alerts, 2 SLOs\s", out, re.M)


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


IOWA = ('resource.type = "cloud_run_revision" AND resource.labels.service_name = "demo-iowa-prod" AND '
        'resource.labels.location = "us-central1" AND metric.type = ')
IOWA_LABELS = {"service": "demo-iowa-prod", "region": "us-central1", "managed-by": "yolo-fleet", "stack": "prod"}
CONSOLE = "https://console.cloud.google.com/run/detail/us-central1/demo-iowa-prod/metrics?project=my-gcp-project"


def runbook(what: str, *checks: str) -> dict:
    """The documentation on-call reads: what fires, what to check, and where to look, in markdown."""
    return {"mimeType": "text/markdown", "subject": f"[yolo-fleet prod] demo-iowa: {what}", "content": "\n".join([
        f"**demo-iowa** (dedicated, us-central1, Cloud Run service demo-iowa-prod): {what}", "", "Check:",
        *[f"- {c}" for c in checks],
        "- `fleet monitor --endpoint demo-iowa` and `fleet logs --endpoint demo-iowa --severity ERROR`",
        f"- Cloud Run metrics: {CONSOLE}"])}


def condition(filter_: str, aligner: str, reducer: str, value: float, denominator: str | None = None) -> dict:
    """A threshold condition as the API receives it: fires when the value stays above `value` for 5 minutes."""
    aggregations = [{"alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer}]
    return {"filter": filter_, "aggregations": aggregations, "comparison": "COMPARISON_GT", "thresholdValue": value,
            "duration": "300s", "trigger": {"count": 1}, "evaluationMissingData": "EVALUATION_MISSING_DATA_INACTIVE",
            **({"denominatorFilter": denominator, "denominatorAggregations": aggregations} if denominator else {})}


def test_each_alert_policy_as_the_api_receives_it(small_prod):
    """Everything on-call sees of demo-iowa's three alerts: title, severity, condition, auto-close and runbook."""
    requests = IOWA + '"run.googleapis.com/request_count"'
    expected = {
        "error-ratio": ("5xx ratio above 5.0% for 5 min", "ERROR", condition(
            requests + ' AND metric.labels.response_code_class = "5xx"', "ALIGN_RATE", "REDUCE_SUM", 0.05, requests),
            ["the latest revision and its logs: a bad image or model file fails every request",
             "health: `curl https://<url>/health`", "recent deploys: `pulumi stack history`"]),
        "latency-p95": ("p95 latency above 2000 ms for 5 min", "WARNING", condition(
            IOWA + '"run.googleapis.com/request_latencies"', "ALIGN_PERCENTILE_95", "REDUCE_MAX", 2000),
            ["cold starts (startup latency) if min_instances is 0: raise min_instances",
             "CPU utilisation near 100%: raise cpu or lower concurrency",
             "image sizes sent by clients (large uploads decode slowly)"]),
        "max-instances": ("pinned at max_instances (10) for 5 min", "WARNING", condition(
            IOWA + '"run.googleapis.com/container/instance_count" AND metric.labels.state = "active"', "ALIGN_MAX",
            "REDUCE_SUM", 9.5),
            ["requests queue or get 429 while pinned: raise max_instances in regions.yaml or the stack config",
             "a traffic spike or a client retry loop in the request logs"]),
    }
    policies = alerts(small_prod, "demo-iowa-prod")
    assert set(policies) == set(expected)
    for kind, (what, severity, threshold_, checks) in expected.items():
        assert policies[kind] == {
            "project": "my-gcp-project", "displayName": f"demo-iowa (prod): {what}", "combiner": "OR",
            "conditions": [{"displayName": what, "conditionThreshold": threshold_}],
            "documentation": runbook(what, *checks), "severity": severity,
            "alertStrategy": {"autoClose": "1800s"}, "userLabels": {**IOWA_LABELS, "alert": kind},
            "notificationChannels": [],  # prod's stack file lists none yet (the policy pack refuses that)
        }, kind


def test_uptime_check_as_the_api_receives_it(small_prod):
    (check,) = [r for r in small_prod.custom(UPTIME) if r.inputs["userLabels"]["service"] == "demo-iowa-prod"]
    assert check.name == "demo-iowa-uptime"
    assert check.inputs == {
        "project": "my-gcp-project", "displayName": "demo-iowa (prod) /health", "period": "60s", "timeout": "10s",
        "httpCheck": {"path": "/health", "port": 443, "useSsl": True, "validateSsl": True},
        "monitoredResource": {"type": "uptime_url", "labels": {
            "project_id": "my-gcp-project", "host": "demo-iowa-prod-PROJECT_NUMBER.us-central1.run.app"}},
        "userLabels": IOWA_LABELS}


def test_slos_as_the_api_receives_them(small_prod):
    """demo-iowa's custom service and its two SLOs: 99.5% of requests not 5xx, 95% under 1000 ms, over 28 days."""
    (service,) = [r for r in small_prod.custom("gcp:monitoring/customService:CustomService")
                  if r.inputs["userLabels"]["service"] == "demo-iowa-prod"]
    assert service.name == "demo-iowa"
    assert service.inputs == {"project": "my-gcp-project", "serviceId": "yolo-fleet-demo-iowa-prod",
                              "displayName": "yolo-fleet demo-iowa (us-central1, prod)", "userLabels": IOWA_LABELS}
    slos = {r.name: r.inputs for r in small_prod.custom(SLO) if r.inputs["userLabels"]["service"] == "demo-iowa-prod"}
    requests = IOWA + '"run.googleapis.com/request_count"'
    common = {"project": "my-gcp-project", "service": "yolo-fleet-demo-iowa-prod", "rollingPeriodDays": 28,
              "userLabels": IOWA_LABELS}
    assert slos == {
        "demo-iowa-availability": {
            **common, "sloId": "demo-iowa-prod-availability", "goal": 0.995,
            "displayName": "demo-iowa: 99.5% of requests not 5xx, 28 days",
            "requestBasedSli": {"goodTotalRatio": {
                "badServiceFilter": requests + ' AND metric.labels.response_code_class = "5xx"',
                "totalServiceFilter": requests}}},
        "demo-iowa-latency": {
            **common, "sloId": "demo-iowa-prod-latency", "goal": 0.95,
            "displayName": "demo-iowa: 95.0% of requests under 1000 ms, 28 days",
            "requestBasedSli": {"distributionCut": {
                "distributionFilter": IOWA + '"run.googleapis.com/request_latencies"', "range": {"max": 1000}}}},
    }


def test_a_model_host_alerts_on_its_clients_5xx_at_its_strictest_endpoints_threshold(write_catalog):
    """With `domain`, each model's host has an error-ratio alert on the balancer's backend service of the model, at
    the lowest ratio and shortest duration of its endpoints (St. Ghislain's here), notifying the stack's channels."""
    def strict_belgium(data: dict) -> None:
        monitoring_regions(data)
        region_entry(data, "europe-west1").setdefault("overrides", {}).update(
            alert_error_ratio=0.02, alert_duration_seconds=120)

    channels = [{"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@example.com"}}]
    plan = evaluate("prod", catalog=write_catalog(strict_belgium), config_overrides={
        "yolo-fleet:domain": "models.example.com", "yolo-fleet:notification_channels": json.dumps(channels)})
    (host,) = [r for r in plan.custom(ALERT) if r.inputs["userLabels"]["alert"] == "host-error-ratio"]
    balancer = ('resource.type = "https_lb_rule" AND resource.labels.url_map_name = "yolo-fleet-prod" AND '
                'resource.labels.backend_target_name = "yolo-fleet-prod-model-demo" AND '
                'metric.type = "loadbalancing.googleapis.com/https/request_count"')
    what = "5xx ratio on https://demo.models.example.com above 2.0% for 2 min"
    aggregations = [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_RATE", "crossSeriesReducer": "REDUCE_SUM"}]
    assert host.name == "host-demo-error-ratio"
    assert host.inputs == {
        "project": "my-gcp-project", "displayName": f"demo.models.example.com (prod): {what}", "combiner": "OR",
        "conditions": [{"displayName": what, "conditionThreshold": {
            "filter": balancer + " AND metric.labels.response_code_class = 500", "denominatorFilter": balancer,
            "aggregations": aggregations, "denominatorAggregations": aggregations, "comparison": "COMPARISON_GT",
            "thresholdValue": 0.02, "duration": "120s", "trigger": {"count": 1},
            "evaluationMissingData": "EVALUATION_MISSING_DATA_INACTIVE"}}],
        "documentation": {
            "mimeType": "text/markdown", "subject": f"[yolo-fleet prod] demo.models.example.com: {what}",
            "content": f"**demo.models.example.com** (model demo, backend service yolo-fleet-prod-model-demo): {what}"
                       "\n\nCheck:\n- the dashboard's balancer charts: which backend region returns the 5xx\n"
                       "- `fleet monitor --stack prod` for the model's endpoints, worst first"},
        "notificationChannels": ["projects/my-gcp-project/notificationChannels/alerts-0-email"], "severity": "ERROR",
        "alertStrategy": {"autoClose": "1800s"},
        "userLabels": {"managed-by": "yolo-fleet", "stack": "prod", "model": "demo", "alert": "host-error-ratio"}}
    (channel,) = plan.custom("gcp:monitoring/notificationChannel:NotificationChannel")
    assert channel.name == "alerts-0-email"
    assert channel.inputs == {"project": "my-gcp-project", "type": "email", "displayName": "On-call",
                              "labels": {"email_address": "oncall@example.com"},
                              "userLabels": {"managed-by": "yolo-fleet"}}


def test_dashboard_tiles_and_queries(small_catalog):
    """Nine charts two to a row, each query aggregated per minute and grouped by region (Cloud Run's location, the
    balancer's backend scope); without a balancer, no balancer charts."""
    services = stack_layout("prod", catalog=small_catalog).layout.services
    document = dashboard_document("prod", services, url_map="yolo-fleet-prod")
    assert document["displayName"] == "yolo-fleet prod" and document["mosaicLayout"]["columns"] == 12
    tiles = document["mosaicLayout"]["tiles"]
    assert [(t["xPos"], t["yPos"], t["width"], t["height"]) for t in tiles] == [
        (x, y, 6, 4) for y in (0, 4, 8, 12) for x in (0, 6)] + [(0, 16, 6, 4)]
    charts = {t["widget"]["title"]: t["widget"]["xyChart"] for t in tiles}
    by_location, by_backend = ["resource.label.location"], ["resource.label.backend_scope"]
    expected = {  # title: (y-axis label, aligner, reducer, group by)
        "Requests/s by region": ("req/s", "ALIGN_RATE", "REDUCE_SUM", by_location),
        "5xx errors/s by region": ("err/s", "ALIGN_RATE", "REDUCE_SUM", by_location),
        "p50 latency by region": ("ms", "ALIGN_DELTA", "REDUCE_PERCENTILE_50", by_location),
        "p95 latency by region": ("ms", "ALIGN_DELTA", "REDUCE_PERCENTILE_95", by_location),
        "Active instances by region": ("instances", "ALIGN_MAX", "REDUCE_SUM", by_location),
        "Balancer requests/s by backend region": ("req/s", "ALIGN_RATE", "REDUCE_SUM", by_backend),
        "Balancer 5xx/s by backend region": ("err/s", "ALIGN_RATE", "REDUCE_SUM", by_backend),
        "Balancer p95 latency by backend region": ("ms", "ALIGN_DELTA", "REDUCE_PERCENTILE_95", by_backend),
    }
    for title, (unit, aligner, reducer, group_by) in expected.items():
        (data_set,) = charts[title]["dataSets"]
        assert (data_set["plotType"], data_set["targetAxis"]) == ("LINE", "Y1"), title
        assert data_set["timeSeriesQuery"]["timeSeriesFilter"]["aggregation"] == {
            "alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer,
            "groupByFields": group_by}, title
        assert charts[title]["yAxis"] == {"label": unit, "scale": "LINEAR"}, title
    balancer = 'resource.type = "https_lb_rule" AND resource.labels.url_map_name = "yolo-fleet-prod" AND metric.type = '
    assert {title: queries({"xyChart": chart_})[0] for title, chart_ in charts.items()
            if title.startswith("Balancer")} == {
        "Balancer requests/s by backend region": balancer + '"loadbalancing.googleapis.com/https/request_count"',
        "Balancer 5xx/s by backend region":
            balancer + '"loadbalancing.googleapis.com/https/request_count" AND metric.labels.response_code_class = 500',
        "Balancer p95 latency by backend region": balancer + '"loadbalancing.googleapis.com/https/total_latencies"'}
    (cold,) = charts["Cold starts by region (container startups per minute)"]["dataSets"]
    assert (cold["plotType"], cold["targetAxis"], cold["timeSeriesQuery"]["unitOverride"]) == ("LINE", "Y1", "1")
    assert charts["Cold starts by region (container startups per minute)"]["yAxis"] == {
        "label": "startups", "scale": "LINEAR"}
    assert [w["title"] for w in document_widgets(services)] == list(charts)[:6], "no balancer, no balancer charts"


def test_the_stack_declares_the_dashboard_of_all_its_services(small_prod, small_catalog):
    (resource,) = small_prod.custom("gcp:monitoring/dashboard:Dashboard")
    assert resource.name == "dashboard" and resource.inputs["project"] == "my-gcp-project"
    services = stack_layout("prod", catalog=small_catalog).layout.services
    assert json.loads(resource.inputs["dashboardJson"]) == dashboard_document("prod", services, "yolo-fleet-prod")


def test_monitoring_lives_under_the_component_it_watches(write_catalog):
    """A service's alerts, uptime check and SLOs belong to its endpoint's component (or the shared API's), a host's
    alert to the balancer, the dashboard to its own component: moving one elsewhere changes its URN, and `pulumi up`
    would delete and recreate it (alert history and SLO burn lost)."""
    plan = evaluate("prod", catalog=write_catalog(monitoring_regions),
                    config_overrides={"yolo-fleet:domain": "models.example.com"})
    parents = {(r.type.split(":")[-1], r.name): r.parent for r in plan.resources
               if r.type.startswith(("gcp:monitoring/", "yolo-fleet:index:FleetDashboard"))}
    watching_iowa = {(kind, name): parents[(kind, name)] for kind, name in parents if "-iowa" in name}
    assert watching_iowa == {
        **{("AlertPolicy", f"{service}-{kind}"): parent for service, parent in (("demo-iowa", "demo-iowa"),
                                                                                ("shared-iowa", "shared"))
           for kind in ("error-ratio", "latency-p95", "max-instances")},
        **{(kind, f"{service}{suffix}"): parent for service, parent in (("demo-iowa", "demo-iowa"),
                                                                          ("shared-iowa", "shared"))
           for kind, suffix in (("UptimeCheckConfig", "-uptime"), ("CustomService", ""), ("Slo", "-availability"),
                                ("Slo", "-latency"))}}
    assert parents[("AlertPolicy", "host-demo-error-ratio")] == "lb"
    assert parents[("Dashboard", "dashboard")] == "dashboard" and parents[("FleetDashboard", "dashboard")] is None


def test_chart_scopes_share_a_data_set_up_to_the_exact_limit(small_catalog):
    """As few data sets as fit: regions (or a region's services) whose filter reaches the limit exactly share one,
    one character less splits them; a chart then draws more lines, each a request to Cloud Monitoring."""
    services = [s for s in stack_layout("prod", catalog=small_catalog).layout.services
                if s.region.id in ("europe-west4", "us-central1")]
    extra = len(ChartScope((), ()).filter(STARTUPS, 'metric.labels.response_code_class = "5xx"'))
    both = ChartScope(("europe-west4", "us-central1"), ("demo-eemshaven-prod", "demo-iowa-prod", "shared-iowa-prod"))
    room = len("europe-west4|us-central1") + len("demo-eemshaven-prod|demo-iowa-prod|shared-iowa-prod")
    assert chart_scopes(services, extra + room) == [both]
    assert chart_scopes(services, extra + room - 1) == [
        ChartScope(("europe-west4",), ("demo-eemshaven-prod",)),
        ChartScope(("us-central1",), ("demo-iowa-prod", "shared-iowa-prod"))]
    iowa = [s for s in services if s.region.id == "us-central1"]
    room = len("us-central1") + len("demo-iowa-prod|shared-iowa-prod")
    assert chart_scopes(iowa, extra + room) == [ChartScope(("us-central1",), ("demo-iowa-prod", "shared-iowa-prod"))]
    assert chart_scopes(iowa, extra + room - 1) == [ChartScope(("us-central1",), ("demo-iowa-prod",)),
                                                    ChartScope(("us-central1",), ("shared-iowa-prod",))]


def test_a_bug_in_the_program_does_not_break_the_next_plan(small_catalog, monkeypatch):
    """A program that raises (here, the dashboard builder) fails its own plan only: the next evaluation in the same
    process plans as usual, instead of awaiting the failed one's tasks on its closed event loop."""
    def broken(*args: object) -> dict:
        raise RuntimeError("a bug in the dashboard")

    with monkeypatch.context() as patch:
        patch.setattr("components.monitoring.dashboard_document", broken)
        with pytest.raises(RuntimeError, match="a bug in the dashboard"):
            evaluate("prod", catalog=small_catalog)
    plan = evaluate("prod", catalog=small_catalog, config_overrides={"yolo-fleet:slo": json.dumps({"enabled": False})})
    assert len(plan.custom("gcp:monitoring/dashboard:Dashboard")) == 1 and not plan.custom(SLO)
