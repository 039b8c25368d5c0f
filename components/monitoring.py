"""Monitoring for every Cloud Run service: three alert policies, an uptime check where it costs nothing
extra, optional SLOs, and one dashboard per stack.

Every alert carries `userLabels` {service, region, alert, managed-by} and filters on that one service
and location: the policy pack checks both, and on-call can tell at a glance which endpoint is hurting.
Uptime checks exist only where min_instances > 0: a probe every minute would keep a scale-to-zero
endpoint awake and billed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import monitoring

from components import names
from components.layout import ServicePlan
from components.stack_config import NotificationChannelSpec, SloSpec

ALERT_KINDS = ("error-ratio", "latency-p95", "max-instances")
REQUESTS = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
INSTANCES = "run.googleapis.com/container/instance_count"
STARTUPS = "run.googleapis.com/container/startup_latencies"
LB_REQUESTS = "loadbalancing.googleapis.com/https/request_count"
LB_LATENCIES = "loadbalancing.googleapis.com/https/total_latencies"
LB_5XX = "metric.labels.response_code_class = 500"  # an INT64 label on the balancer's metrics, unlike Cloud Run's


def balancer_filter(url_map: str, metric: str, backend: str | None = None, extra: str = "") -> str:
    """A filter for one of the balancer's metrics: all its traffic, or one backend service's."""
    parts = ['resource.type = "https_lb_rule"', f'resource.labels.url_map_name = "{url_map}"',
             *([f'resource.labels.backend_target_name = "{backend}"'] if backend else []),
             f'metric.type = "{metric}"', *([extra] if extra else [])]
    return " AND ".join(parts)


def service_filter(name: str, region: str, metric: str, extra: str = "") -> str:
    """A Cloud Monitoring filter for one metric of one Cloud Run service in one region."""
    base = (f'resource.type = "cloud_run_revision" AND resource.labels.service_name = "{name}" '
            f'AND resource.labels.location = "{region}" AND metric.type = "{metric}"')
    return f"{base} AND {extra}" if extra else base


@dataclass(frozen=True)
class MonitoringInputs:
    """What a service's monitoring needs from the stack."""

    project: str
    stack: str
    channels: Sequence[pulumi.Input[str]] = field(default_factory=list)
    slo: SloSpec = field(default_factory=SloSpec)
    # The public host the uptime check probes; None: the service's own run.app host.
    uptime_host: pulumi.Input[str] | None = None


def _runbook(plan: ServicePlan, inputs: MonitoringInputs, what: str,
             checks: list[str]) -> monitoring.AlertPolicyDocumentationArgs:
    project = inputs.project
    console = (f"https://console.cloud.google.com/run/detail/{plan.region.id}/{plan.service_name}/metrics"
               f"?project={project}")
    lines = [f"**{plan.name}** ({plan.role}, {plan.region.id}, Cloud Run service {plan.service_name}): {what}", "",
             "Check:",
             *[f"- {c}" for c in checks],
             f"- `fleet monitor --endpoint {plan.name}` and `fleet logs --endpoint {plan.name} --severity ERROR`",
             f"- Cloud Run metrics: {console}"]
    return monitoring.AlertPolicyDocumentationArgs(content="\n".join(lines), mime_type="text/markdown",
                                                  subject=f"[yolo-fleet {inputs.stack}] {plan.name}: {what}")


def _threshold(filter_: str, aligner: str, reducer: str, value: float, duration: int,
               denominator: str | None = None) -> monitoring.AlertPolicyConditionConditionThresholdArgs:
    aggregation = monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
        alignment_period="60s", per_series_aligner=aligner, cross_series_reducer=reducer)
    # a ratio's denominator is aggregated as its numerator is
    denominator_aggregation = monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
        alignment_period="60s", per_series_aligner=aligner, cross_series_reducer=reducer)
    return monitoring.AlertPolicyConditionConditionThresholdArgs(
        filter=filter_, aggregations=[aggregation], comparison="COMPARISON_GT", threshold_value=value,
        duration=f"{duration}s",
        trigger=monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(count=1),
        denominator_filter=denominator,
        denominator_aggregations=[denominator_aggregation] if denominator else None,
        evaluation_missing_data="EVALUATION_MISSING_DATA_INACTIVE",
    )


def declare_monitoring(plan: ServicePlan, service_uri: pulumi.Output[str], inputs: MonitoringInputs,
                       parent: pulumi.Resource) -> list[pulumi.CustomResource]:
    """Alert policies (always), an uptime check (min_instances > 0), SLOs (when enabled) for one service.

    Titles use the endpoint's name (`demo-iowa`); filters and the `service` label its Cloud Run service's.
    """
    s, name, service, region = plan.settings, plan.name, plan.service_name, plan.region.id
    opts = pulumi.ResourceOptions(parent=parent)
    requests = service_filter(service, region, REQUESTS)
    conditions = {
        "error-ratio": (
            f"5xx ratio above {s.alert_error_ratio:.1%} for {s.alert_duration_seconds // 60} min", "ERROR",
            _threshold(service_filter(service, region, REQUESTS, 'metric.labels.response_code_class = "5xx"'),
                       "ALIGN_RATE", "REDUCE_SUM", s.alert_error_ratio, s.alert_duration_seconds, requests),
            ["the latest revision and its logs: a bad image or model file fails every request",
             "health: `curl https://<url>/health`", "recent deploys: `pulumi stack history`"]),
        "latency-p95": (
            f"p95 latency above {s.alert_latency_p95_ms} ms for {s.alert_duration_seconds // 60} min", "WARNING",
            _threshold(service_filter(service, region, LATENCIES), "ALIGN_PERCENTILE_95", "REDUCE_MAX",
                       float(s.alert_latency_p95_ms), s.alert_duration_seconds),
            ["cold starts (startup latency) if min_instances is 0: raise min_instances",
             "CPU utilisation near 100%: raise cpu or lower concurrency",
             "image sizes sent by clients (large uploads decode slowly)"]),
        "max-instances": (
            f"pinned at max_instances ({s.max_instances}) for {s.alert_duration_seconds // 60} min", "WARNING",
            _threshold(service_filter(service, region, INSTANCES, 'metric.labels.state = "active"'), "ALIGN_MAX",
                       "REDUCE_SUM", s.max_instances - 0.5, s.alert_duration_seconds),
            ["requests queue or get 429 while pinned: raise max_instances in regions.yaml or the stack config",
             "a traffic spike or a client retry loop in the request logs"]),
    }
    resources: list[pulumi.CustomResource] = []
    for kind, (what, severity, threshold, checks) in conditions.items():
        resources.append(monitoring.AlertPolicy(
            f"{name}-{kind}",
            project=inputs.project,
            # unique in the project, as the API asks, even with several stacks in it
            display_name=f"{name} ({inputs.stack}): {what}",
            combiner="OR",
            conditions=[monitoring.AlertPolicyConditionArgs(display_name=what, condition_threshold=threshold)],
            documentation=_runbook(plan, inputs, what, checks),
            notification_channels=inputs.channels,
            severity=severity,
            alert_strategy=monitoring.AlertPolicyAlertStrategyArgs(auto_close="1800s"),
            user_labels={**_labels(plan, inputs.stack), "alert": kind},
            opts=opts,
        ))
    if s.min_instances > 0:
        host = inputs.uptime_host or service_uri.apply(lambda uri: uri.removeprefix("https://").split("/")[0])
        resources.append(monitoring.UptimeCheckConfig(
            f"{name}-uptime",
            project=inputs.project,
            display_name=f"{name} ({inputs.stack}) /health",
            period="60s",
            timeout="10s",
            http_check=monitoring.UptimeCheckConfigHttpCheckArgs(path="/health", port=443, use_ssl=True,
                                                                 validate_ssl=True),
            monitored_resource=monitoring.UptimeCheckConfigMonitoredResourceArgs(
                type="uptime_url", labels={"project_id": inputs.project, "host": host}),
            user_labels=_labels(plan, inputs.stack),
            opts=opts,
        ))
    if inputs.slo.enabled:
        resources.extend(_slos(plan, inputs, opts))
    return resources


def declare_host_alert(model: str, host: str, url_map: str, backend: str, ratio: float, duration: int,
                       inputs: MonitoringInputs, parent: pulumi.Resource) -> monitoring.AlertPolicy:
    """The 5xx ratio a model's clients see on its host, whichever regions served them: a region that fails
    over is ejected, so this alerts when failover no longer hides the errors."""
    what = f"5xx ratio on https://{host} above {ratio:.1%} for {duration // 60} min"
    return monitoring.AlertPolicy(
        f"host-{model}-error-ratio", project=inputs.project, display_name=f"{host} ({inputs.stack}): {what}",
        combiner="OR",
        conditions=[monitoring.AlertPolicyConditionArgs(display_name=what, condition_threshold=_threshold(
            balancer_filter(url_map, LB_REQUESTS, backend, LB_5XX), "ALIGN_RATE", "REDUCE_SUM", ratio, duration,
            balancer_filter(url_map, LB_REQUESTS, backend)))],
        documentation=monitoring.AlertPolicyDocumentationArgs(
            mime_type="text/markdown", subject=f"[yolo-fleet {inputs.stack}] {host}: {what}",
            content=f"**{host}** (model {model}, backend service {backend}): {what}\n\nCheck:\n"
                    "- the dashboard's balancer charts: which backend region returns the 5xx\n"
                    f"- `fleet monitor --stack {inputs.stack}` for the model's endpoints, worst first"),
        notification_channels=inputs.channels, severity="ERROR",
        alert_strategy=monitoring.AlertPolicyAlertStrategyArgs(auto_close="1800s"),
        user_labels={"managed-by": "yolo-fleet", "stack": names.label_value(inputs.stack), "model": model,
                     "alert": "host-error-ratio"},
        opts=pulumi.ResourceOptions(parent=parent))


def _labels(plan: ServicePlan, stack: str) -> dict[str, str]:
    """userLabels of everything watching one service: the Cloud Run service it is about, where, which stack."""
    return {"service": plan.service_name, "region": plan.region.id, "managed-by": "yolo-fleet",
            "stack": names.label_value(stack)}


def _slos(plan: ServicePlan, inputs: MonitoringInputs, opts: pulumi.ResourceOptions) -> list[pulumi.CustomResource]:
    name, service, region, slo, stack = plan.name, plan.service_name, plan.region.id, inputs.slo, inputs.stack
    labels = _labels(plan, stack)
    custom = monitoring.CustomService(
        name, project=inputs.project, service_id=names.monitoring_service_id(name, stack),
        display_name=f"yolo-fleet {name} ({region}, {stack})", user_labels=labels, opts=opts)
    availability = monitoring.Slo(
        f"{name}-availability",
        project=inputs.project,
        service=custom.service_id,
        slo_id=names.slo_id(name, stack, "availability"),
        display_name=f"{name}: {slo.availability_goal:.1%} of requests not 5xx, {slo.rolling_period_days} days",
        goal=slo.availability_goal,
        rolling_period_days=slo.rolling_period_days,
        user_labels=labels,
        request_based_sli=monitoring.SloRequestBasedSliArgs(
            good_total_ratio=monitoring.SloRequestBasedSliGoodTotalRatioArgs(
                bad_service_filter=service_filter(service, region, REQUESTS,
                                                  'metric.labels.response_code_class = "5xx"'),
                total_service_filter=service_filter(service, region, REQUESTS))),
        opts=opts,
    )
    latency = monitoring.Slo(
        f"{name}-latency",
        project=inputs.project,
        service=custom.service_id,
        slo_id=names.slo_id(name, stack, "latency"),
        display_name=f"{name}: {slo.latency_goal:.1%} of requests under {slo.latency_ms} ms, "
                     f"{slo.rolling_period_days} days",
        goal=slo.latency_goal,
        rolling_period_days=slo.rolling_period_days,
        user_labels=labels,
        request_based_sli=monitoring.SloRequestBasedSliArgs(
            distribution_cut=monitoring.SloRequestBasedSliDistributionCutArgs(
                distribution_filter=service_filter(service, region, LATENCIES),
                range=monitoring.SloRequestBasedSliDistributionCutRangeArgs(max=float(slo.latency_ms)))),
        opts=opts,
    )
    return [custom, availability, latency]


def notification_channels(specs: list[NotificationChannelSpec], project: str,
                          parent: pulumi.Resource | None = None) -> list[pulumi.Output[str]]:
    """Declare the configured channels; alert policies reference them by resource name."""
    return [gcp.monitoring.NotificationChannel(
        f"alerts-{i}-{spec.type}",
        project=project, type=spec.type, display_name=spec.display_name, labels=spec.labels,
        user_labels={"managed-by": "yolo-fleet"},
        opts=pulumi.ResourceOptions(parent=parent)).name for i, spec in enumerate(specs)]


# The longest filter the Monitoring API documents: an alert condition's filter "may not exceed 2048 Unicode
# characters" (MetricThreshold.filter, https://cloud.google.com/python/docs/reference/monitoring/latest/
# google.cloud.monitoring_v3.types.AlertPolicy.Condition.MetricThreshold). Dashboard filters document no limit
# of their own; the charts keep within this one.
FILTER_MAX_CHARS = 2048
STARTUPS_PROMQL = "run_googleapis_com:container_startup_latencies_count"


def _alternation(values: Sequence[str]) -> str:
    """A regular expression matching exactly these Cloud Run service names or region ids, which are [a-z0-9-]
    and so need no escaping in RE2."""
    return "|".join(values)


@dataclass(frozen=True)
class ChartScope:
    """Some of the stack's services, with every service of their regions: one data set per scope in a chart."""

    locations: tuple[str, ...]
    services: tuple[str, ...]

    def filter(self, metric: str, extra: str) -> str:
        """A filter on the built-in labels every Cloud Run metric carries (not metadata.user_labels)."""
        base = ('resource.type = "cloud_run_revision" AND resource.labels.location = '
                f'monitoring.regex.full_match("{_alternation(self.locations)}") AND resource.labels.service_name = '
                f'monitoring.regex.full_match("{_alternation(self.services)}") AND metric.type = "{metric}"')
        return f"{base} AND {extra}" if extra else base

    def startups_promql(self) -> str:
        """Container startups per minute by region, from the startup-latency distribution's `_count`.

        A distribution-valued metric is queried in PromQL like a Prometheus histogram, whose `_count` is the
        number of values (https://cloud.google.com/monitoring/promql/promql-mapping): here, startups.
        """
        selector = (f'{STARTUPS_PROMQL}{{monitored_resource="cloud_run_revision",'
                    f'location=~"{_alternation(self.locations)}",service_name=~"{_alternation(self.services)}"}}')
        return f"sum by (location) (increase({selector}[1m]))"


# The longest filter the charts build beyond their scope's regular expressions.
_LONGEST_EXTRA = len(ChartScope((), ()).filter(STARTUPS, 'metric.labels.response_code_class = "5xx"'))


def chart_scopes(services: Sequence[ServicePlan], limit: int = FILTER_MAX_CHARS) -> list[ChartScope]:
    """The stack's services in as few scopes as keep every filter within `limit`, whole regions per scope
    (charts group by region, so a region in two data sets would be two lines); a region whose services alone
    exceed the limit is split, its line then drawn once per part."""
    by_region: dict[str, list[str]] = defaultdict(list)
    for plan in services:
        by_region[plan.region.id].append(plan.service_name)
    budget = limit - _LONGEST_EXTRA
    scopes: list[ChartScope] = []
    locations: list[str] = []
    names: list[str] = []

    def size(locs: list[str], svcs: list[str]) -> int:
        return len(_alternation(locs)) + len(_alternation(svcs))

    def close() -> None:
        if names:
            scopes.append(ChartScope(tuple(locations), tuple(names)))
        locations.clear()
        names.clear()

    for region, region_names in sorted(by_region.items()):
        if size([*locations, region], [*names, *region_names]) > budget:
            close()
        for name in sorted(region_names):
            if names and size(sorted({*locations, region}), [*names, name]) > budget:
                close()
            if region not in locations:
                locations.append(region)
            names.append(name)
    close()
    return scopes


def _filter_chart(title: str, scopes: list[ChartScope], metric: str, aligner: str, reducer: str, extra: str = "",
                  unit: str = "") -> dict[str, Any]:
    data_sets = [{"plotType": "LINE", "targetAxis": "Y1", "timeSeriesQuery": {"timeSeriesFilter": {
        "filter": scope.filter(metric, extra),
        "aggregation": {"alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer,
                        "groupByFields": ["resource.label.location"]}}}} for scope in scopes]
    return {"title": title, "xyChart": {"dataSets": data_sets, "yAxis": {"label": unit, "scale": "LINEAR"}}}


def _startups_chart(scopes: list[ChartScope]) -> dict[str, Any]:
    """Startups, not series: REDUCE_COUNT counts "data points across time series", one per series and period,
    and ALIGN_COUNT is valid only for numeric and Boolean values, not distributions
    (https://cloud.google.com/python/docs/reference/monitoring/latest/google.cloud.monitoring_v3.types.Aggregation.Reducer);
    the distribution's own count, through PromQL's `_count`, is the number of startups."""
    data_sets = [{"plotType": "LINE", "targetAxis": "Y1", "timeSeriesQuery": {
        "prometheusQuery": scope.startups_promql(), "unitOverride": "1"}} for scope in scopes]
    return {"title": "Cold starts by region (container startups per minute)",
            "xyChart": {"dataSets": data_sets, "yAxis": {"label": "startups", "scale": "LINEAR"}}}


def _balancer_chart(title: str, url_map: str, metric: str, aligner: str, reducer: str, extra: str = "",
                    unit: str = "") -> dict[str, Any]:
    """One of the balancer's metrics, one line per backend region (a serverless NEG's region is its scope)."""
    data_set = {"plotType": "LINE", "targetAxis": "Y1", "timeSeriesQuery": {"timeSeriesFilter": {
        "filter": balancer_filter(url_map, metric, extra=extra),
        "aggregation": {"alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer,
                        "groupByFields": ["resource.label.backend_scope"]}}}}
    return {"title": title, "xyChart": {"dataSets": [data_set], "yAxis": {"label": unit, "scale": "LINEAR"}}}


def dashboard_document(stack: str, services: Sequence[ServicePlan], url_map: str | None = None) -> dict[str, Any]:
    """The stack's dashboard: traffic, errors, latency, instances and cold starts of exactly the stack's
    services, one line per region; with a balancer (`url_map`), its requests, 5xx and latency by backend region."""
    scopes = chart_scopes(services)
    charts = [
        _filter_chart("Requests/s by region", scopes, REQUESTS, "ALIGN_RATE", "REDUCE_SUM", unit="req/s"),
        _filter_chart("5xx errors/s by region", scopes, REQUESTS, "ALIGN_RATE", "REDUCE_SUM",
                      'metric.labels.response_code_class = "5xx"', "err/s"),
        _filter_chart("p50 latency by region", scopes, LATENCIES, "ALIGN_DELTA", "REDUCE_PERCENTILE_50", unit="ms"),
        _filter_chart("p95 latency by region", scopes, LATENCIES, "ALIGN_DELTA", "REDUCE_PERCENTILE_95", unit="ms"),
        _filter_chart("Active instances by region", scopes, INSTANCES, "ALIGN_MAX", "REDUCE_SUM",
                      'metric.labels.state = "active"', "instances"),
        _startups_chart(scopes),
    ]
    if url_map:
        charts += [
            _balancer_chart("Balancer requests/s by backend region", url_map, LB_REQUESTS, "ALIGN_RATE", "REDUCE_SUM",
                            unit="req/s"),
            _balancer_chart("Balancer 5xx/s by backend region", url_map, LB_REQUESTS, "ALIGN_RATE", "REDUCE_SUM",
                            LB_5XX, "err/s"),
            _balancer_chart("Balancer p95 latency by backend region", url_map, LB_LATENCIES, "ALIGN_DELTA",
                            "REDUCE_PERCENTILE_95", unit="ms"),
        ]
    tiles = [{"xPos": (i % 2) * 6, "yPos": (i // 2) * 4, "width": 6, "height": 4, "widget": chart}
             for i, chart in enumerate(charts)]
    return {"displayName": f"yolo-fleet {stack}", "mosaicLayout": {"columns": 12, "tiles": tiles}}


@dataclass(frozen=True)
class FleetDashboardArgs:
    project: str
    stack: str
    services: Sequence[ServicePlan]  # every service of the stack, dedicated and shared
    url_map: str | None = None  # the global balancer's URL map (physical name), when the stack has one



class FleetDashboard(pulumi.ComponentResource):
    """One Cloud Monitoring dashboard per stack; outputs `dashboard_id`."""

    dashboard_id: pulumi.Output[str]

    def __init__(self, name: str, args: FleetDashboardArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:FleetDashboard", name, None, opts)
        document = dashboard_document(args.stack, args.services, args.url_map)
        dashboard = monitoring.Dashboard(name, project=args.project, dashboard_json=json.dumps(document),
                                         opts=pulumi.ResourceOptions(parent=self))
        self.dashboard_id = dashboard.id
        self.register_outputs({"dashboard_id": self.dashboard_id})
