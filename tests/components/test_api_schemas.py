"""Every planned resource, translated into its Google API message and checked against the API's schema and
documented limits (tests/api_messages.py, tests/api_limits.py): what `pulumi up` would send is what the
APIs accept, for the stock stacks and for stacks that turn every optional resource on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from fleet.mocks import RecordedResource
from fleet.program import Plan, evaluate
from tests.api_limits import resource_problems
from tests.api_messages import NOT_GOOGLE_APIS, TRANSLATORS, translate
from tests.stacks import AWKWARD_STACKS

CHANNELS = [{"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@example.com"}},
            {"type": "slack", "display_name": "Alerts", "labels": {"channel_name": "#alerts"}}]
# Every optional resource at once: a GPU model (cpu 4, 16Gi, CPU always on) in a GPU region, warm instances
# (uptime checks), SLOs, notification channels, and the shared services with their tenants.
EVERYTHING_ON = {
    "yolo-fleet:models": json.dumps([
        {"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["us-central1", "europe-west1"]},
        {"name": "gpu", "file": "models/demo-e2e.onnx", "regions": ["us-central1", "europe-west4"],
         "settings": {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False, "gpu_zonal_redundancy": False}}]),
    "yolo-fleet:forced_settings": json.dumps({"min_instances": 1, "max_instances": 3}),  # over dev's own
    "yolo-fleet:slo": json.dumps({"enabled": True, "availability_goal": 0.999, "latency_ms": 500}),
    "yolo-fleet:notification_channels": json.dumps(CHANNELS),
}
# Settings at Cloud Run's edges: the largest instance, the most concurrency, the longest timeout.
LARGEST = {
    "yolo-fleet:forced_settings": json.dumps({
        "cpu": 8, "memory": "32Gi", "concurrency": 1000, "timeout_seconds": 3600, "min_instances": 1,
        "max_instances": 1000, "public": True, "ingress": "internal-and-cloud-load-balancing",
        "alert_duration_seconds": 3600}),
}
SMALLEST = {
    "yolo-fleet:forced_settings": json.dumps({"cpu": 1, "memory": "2Gi", "concurrency": 1, "timeout_seconds": 1,
                                              "min_instances": 0, "max_instances": 1,
                                              "alert_duration_seconds": 60}),
}

# A host per model and endpoint on the balancer (outlier detection), a ban rule in preview, TLS 1.3 only.
DOMAIN_BAN = {
    "yolo-fleet:domain": "models.example.com",
    "yolo-fleet:rate_limit": json.dumps({"action": "ban", "ban_seconds": 300, "preview": True}),
    "yolo-fleet:tls": json.dumps({"min_tls_version": "TLS_1_3", "profile": "RESTRICTED"}),
}

PlanFactory = Callable[[pytest.FixtureRequest], Plan]
# The plans checked, one line each. The stock stacks and the awkward stack names (tests/stacks.py) reuse the
# session's plans (conftest.py), so the suite plans them once.
PLANS: list[tuple[str, PlanFactory]] = [
    ("dev", lambda request: request.getfixturevalue("dev_plan")),
    ("prod", lambda request: request.getfixturevalue("prod_plan")),
    ("dev-everything-on", lambda _: evaluate("dev", config_overrides=EVERYTHING_ON)),
    ("dev-largest", lambda _: evaluate("dev", config_overrides=LARGEST)),
    ("dev-smallest", lambda _: evaluate("dev", config_overrides=SMALLEST)),
    ("dev-domain-ban", lambda _: evaluate("dev", config_overrides=DOMAIN_BAN)),
    *[(f"awkward-stack:{stack}", lambda request, stack=stack: request.getfixturevalue("awkward_plans")[stack])
      for stack in AWKWARD_STACKS],
]
Plans = Callable[[str], Plan]


@pytest.fixture(scope="module")
def plans(request: pytest.FixtureRequest) -> Plans:
    """plans(id) -> that plan, evaluated once for the module on first use."""
    cache: dict[str, Plan] = {}

    def get(plan_id: str) -> Plan:
        if plan_id not in cache:
            cache[plan_id] = dict(PLANS)[plan_id](request)
        return cache[plan_id]

    return get


def plan_problems(plan: Plan) -> list[str]:
    return [problem for r in plan.custom() if r.type not in NOT_GOOGLE_APIS for problem in resource_problems(r)]


@pytest.mark.parametrize("plan_id", [plan_id for plan_id, _ in PLANS])
def test_every_planned_resource_is_what_its_api_accepts(plans: Plans, plan_id: str) -> None:
    plan = plans(plan_id)
    problems = plan_problems(plan)
    assert not problems, f"{len(problems)} problem(s) in plan {plan_id}:\n" + "\n".join(problems[:40])


def test_the_extra_plans_declare_every_optional_resource_type(plans: Plans) -> None:
    """The parametrized check covers GPUs, uptime checks, SLOs and channels only if some plan declares them."""
    types = {r.type for plan_id, _ in PLANS for r in plans(plan_id).custom()}
    assert set(TRANSLATORS) - types <= {"gcp:projects/iAMAuditConfig:IAMAuditConfig"}, set(TRANSLATORS) - types
    gpu = [r for r in plans("dev-everything-on").custom("gcp:cloudrunv2/service:Service")
           if r.inputs["template"].get("nodeSelector")]
    assert len(gpu) == 2
    assert gpu[0].inputs["template"]["containers"][0]["resources"]["limits"] == {
        "cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}


# --- the check fails on what the APIs refuse ------------------------------------------------------------------
def first(plans: Plans, type_token: str, plan_id: str = "dev-everything-on") -> RecordedResource:
    return copy.deepcopy(plans(plan_id).custom(type_token)[0])


def problems_after(resource: RecordedResource, mutate: Callable[[dict[str, Any]], None]) -> str:
    assert resource_problems(resource) == []  # the real resource passes; the mutation alone must fail it
    mutate(resource.inputs)
    return "\n".join(resource_problems(resource))


def case_id(value: object) -> str:
    """Test ids from the cases' text (the mutation functions have no readable name)."""
    return value if isinstance(value, str) else "mutated"


RUN = "gcp:cloudrunv2/service:Service"
ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"


def container(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs["template"]["containers"][0]


@pytest.mark.parametrize(("what", "mutate", "expected"), [
    ("typo in a provider field",
     lambda i: container(i).__setitem__("volumeMount", container(i).pop("volumeMounts")),
     "template.containers[0].volumeMount: provider field with no API mapping"),
    ("typo inside a nested object",
     lambda i: container(i)["startupProbe"]["httpGet"].__setitem__("paht", "/health"),
     'no field named "paht"'),
    ("bad enum", lambda i: i.__setitem__("ingress", "INGRESS_TRAFFIC_EVERYWHERE"),
     "Invalid enum value INGRESS_TRAFFIC_EVERYWHERE"),
    ("duration without unit", lambda i: i["template"].__setitem__("timeout", "10"),
     'Duration must end with letter "s"'),
    ("memory over the cpu's bound", lambda i: container(i)["resources"]["limits"].update(cpu="1", memory="8Gi"),
     "memory 8Gi needs at least 2 vCPU"),
    ("cpu not offered", lambda i: container(i)["resources"]["limits"].update(cpu="3"), "'3' is not a Cloud Run CPU"),
    ("too little memory for 8 cpu", lambda i: container(i)["resources"]["limits"].update(cpu="8", memory="2Gi"),
     "cpu 8 needs at least 4Gi"),
    ("concurrency over 1000", lambda i: i["template"].__setitem__("maxInstanceRequestConcurrency", 1001.0),
     "maxInstanceRequestConcurrency: 1001 outside 1-1000"),
    ("timeout over an hour", lambda i: i["template"].__setitem__("timeout", "3601s"), "3601 s outside 1-3600"),
    ("startup probe period over 240", lambda i: container(i)["startupProbe"].update(periodSeconds=241.0),
     "periodSeconds: 241 outside 1-240"),
    ("probe timeout over its period", lambda i: container(i)["livenessProbe"].update(timeoutSeconds=31.0),
     "timeoutSeconds: 31 must be 1 to periodSeconds (30)"),
    ("startup probe window over 240 s", lambda i: container(i)["startupProbe"].update(failureThreshold=121.0),
     "failureThreshold x periodSeconds = 242 s"),
    ("GPU with CPU idle", lambda i: container(i)["resources"].update(cpuIdle=True), "cpuIdle false"),
    ("unknown env name reserved by Cloud Run", lambda i: container(i)["envs"].append({"name": "PORT", "value": "1"}),
     "reserved or invalid environment variable name"),
    ("mount of a volume that does not exist",
     lambda i: container(i)["volumeMounts"].append({"name": "nope", "mountPath": "/nope"}), "no volume of that name"),
    ("service name too long", lambda i: i.__setitem__("name", "a" * 50), "is not a Cloud Run service name"),
    ("label value with capitals", lambda i: i["labels"].update(stack="Stg.EU_1"), "is not a label value"),
    ("revision not named after its service", lambda i: i["template"].update(revision="other-1a2b3c4d5e6f"),
     "template.revision: 'other-1a2b3c4d5e6f' is not"),
    ("traffic split not summing to 100", lambda i: i["traffics"][0].update(percent=90.0),
     "traffic: percentages sum to 90, not 100"),
], ids=case_id)
def test_cloud_run_mutations_fail(plans: Plans, what: str, mutate: Callable[[dict[str, Any]], None],
                                  expected: str) -> None:
    gpu_service = next(r for r in plans("dev-everything-on").custom(RUN)
                       if r.inputs["template"].get("nodeSelector"))
    assert expected in problems_after(copy.deepcopy(gpu_service), mutate), what


def condition(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs["conditions"][0]["conditionThreshold"]


def alert(plans: Plans, kind: str) -> RecordedResource:
    return copy.deepcopy(next(r for r in plans("dev").custom(ALERT) if r.name.endswith(kind)))


@pytest.mark.parametrize(("kind", "mutate", "expected"), [
    ("error-ratio", lambda i: condition(i)["aggregations"][0].update(perSeriesAligner="ALIGN_PERCENTILE_95"),
     "ALIGN_PERCENTILE_95 is not valid for a DELTA INT64 metric"),
    ("max-instances", lambda i: condition(i)["aggregations"][0].update(perSeriesAligner="ALIGN_RATE"),
     "ALIGN_RATE is not valid for a GAUGE INT64 metric"),
    ("latency-p95", lambda i: condition(i)["aggregations"][0].update(perSeriesAligner="ALIGN_DELTA"),
     "REDUCE_MAX is not valid for ALIGN_DELTA's DISTRIBUTION output"),
    ("latency-p95", lambda i: condition(i)["aggregations"][0].update(perSeriesAligner="ALIGN_NONE"),
     "needs a perSeriesAligner other than ALIGN_NONE"),
    ("error-ratio", lambda i: condition(i)["denominatorAggregations"][0].update(alignmentPeriod="30s"),
     "alignmentPeriod: 30 s, at least 60 s"),
    ("error-ratio", lambda i: condition(i).update(duration="90s"), "90 s, must be a multiple of 60 s"),
    ("error-ratio", lambda i: condition(i).update(duration="300"), 'Duration must end with letter "s"'),
    ("error-ratio", lambda i: condition(i).update(comparison="COMPARISON_GREATER"),
     "Invalid enum value COMPARISON_GREATER"),
    ("error-ratio", lambda i: condition(i).update(filter=condition(i)["filter"].replace("request_count", "requests")),
     "metric run.googleapis.com/requests is not in"),
    ("max-instances", lambda i: i["userLabels"].update(service="demo.iowa"), "is not a label value"),
], ids=case_id)
def test_alert_policy_mutations_fail(plans: Plans, kind: str, mutate: Callable[[dict[str, Any]], None],
                                     expected: str) -> None:
    assert expected in problems_after(alert(plans, kind), mutate)


def dashboard_chart(inputs: dict[str, Any], title: str, **aggregation: str) -> None:
    """Change one chart's aggregation inside the dashboard's JSON."""
    document = json.loads(inputs["dashboardJson"])
    tile = next(t for t in document["mosaicLayout"]["tiles"] if t["widget"]["title"].startswith(title))
    tile["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]["aggregation"].update(aggregation)
    inputs["dashboardJson"] = json.dumps(document)


def test_dashboard_mutations_fail(plans: Plans) -> None:
    dashboard = first(plans, "gcp:monitoring/dashboard:Dashboard", "dev")
    assert "ALIGN_PERCENTILE_50 is not valid for a DELTA INT64 metric" in problems_after(
        copy.deepcopy(dashboard), lambda i: dashboard_chart(i, "Requests/s", perSeriesAligner="ALIGN_PERCENTILE_50"))
    assert problems_after(  # a percentile of per-series rates is valid: no false alarm
        copy.deepcopy(dashboard), lambda i: dashboard_chart(i, "Requests/s", crossSeriesReducer="REDUCE_PERCENTILE_95")
    ) == ""
    assert "ALIGN_RATE is not valid for a GAUGE INT64 metric" in problems_after(
        copy.deepcopy(dashboard), lambda i: dashboard_chart(i, "Active instances", perSeriesAligner="ALIGN_RATE"))
    assert "Invalid enum value ALIGN_AVERAGE" in problems_after(
        copy.deepcopy(dashboard), lambda i: dashboard_chart(i, "Requests/s", perSeriesAligner="ALIGN_AVERAGE"))
    assert "overlaps tiles [0]" in problems_after(copy.deepcopy(dashboard), lambda i: i.update(dashboardJson=json.dumps(
        {**json.loads(i["dashboardJson"]), "mosaicLayout": {"columns": 12, "tiles": [
            {"xPos": 0, "yPos": 0, "width": 6, "height": 4}, {"xPos": 3, "yPos": 2, "width": 6, "height": 4}]}})))


@pytest.mark.parametrize(("type_token", "mutate", "expected"), [
    ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", lambda i: i.update(period="120s"),
     "period: 120 s, one of [60, 300, 600, 900] s"),
    ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", lambda i: i.update(timeout="61s"), "must be 1-60 s"),
    ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", lambda i: i.update(timeout="10"),
     'Duration must end with letter "s"'),
    ("gcp:monitoring/slo:Slo", lambda i: i.update(goal=0.99999), "must be in (0, 0.9999]"),
    ("gcp:monitoring/slo:Slo", lambda i: i.update(rollingPeriodDays=31.0), "31 days"),
    ("gcp:monitoring/slo:Slo", lambda i: i.update(requestBasedSli={"distributionCut": {
        "distributionFilter": i["requestBasedSli"]["goodTotalRatio"]["totalServiceFilter"], "range": {"max": 1.0}}}),
     "needs a DELTA or CUMULATIVE DISTRIBUTION metric"),
    ("gcp:monitoring/notificationChannel:NotificationChannel", lambda i: i.update(typ="email"),
     "typ: provider field with no API mapping"),
    ("gcp:compute/backendService:BackendService", lambda i: i.update(loadBalancingScheme="EXTERNAL_MANAGEDX"),
     "'EXTERNAL_MANAGEDX' is not one of"),
    ("gcp:compute/uRLMap:URLMap", lambda i: i["hostRules"][0].update(pathMatcher="nowhere"),
     "pathMatcher 'nowhere' is not defined"),
    ("gcp:compute/uRLMap:URLMap", lambda i: i["pathMatchers"][-1]["pathRules"][0].update(paths=["api/*"]),
     "'api/*' is not a URL map path"),
    ("gcp:compute/uRLMap:URLMap", lambda i: i.update(name="Yolo_Fleet"), "is not a compute name"),
    ("gcp:compute/managedSslCertificate:ManagedSslCertificate",
     lambda i: i["managed"].update(domains=["*.example.com"]), "is not a fully qualified domain name"),
    ("gcp:compute/sSLPolicy:SSLPolicy", lambda i: i.update(minTlsVersion="TLS_1_5"), "'TLS_1_5' is not one of"),
    ("gcp:compute/securityPolicy:SecurityPolicy",
     lambda i: i["rules"][0]["rateLimitOptions"]["rateLimitThreshold"].update(intervalSec=45.0),
     "intervalSec: 45 is not a Cloud Armor interval"),
    ("gcp:compute/securityPolicy:SecurityPolicy", lambda i: i["rules"].pop(), "no default rule"),
    ("gcp:compute/securityPolicy:SecurityPolicy", lambda i: i["rules"][0].update(action="allow"),
     "rateLimitOptions go with a throttle or rate_based_ban action"),
    ("gcp:serviceaccount/account:Account", lambda i: i.update(accountId="demo-sao-paulo-and-much-longer-x"),
     "must be 6-30"),
    ("gcp:projects/iAMMember:IAMMember", lambda i: i.update(member="demo@my-project.iam.gserviceaccount.com"),
     "is not a principal identifier"),
    ("gcp:secretmanager/secret:Secret", lambda i: i.update(secretId="yolo-fleet/prod"), "must be 1-255"),
    ("gcp:secretmanager/secret:Secret", lambda i: i["replication"].update(automatic={}),
     "replication.automatic: provider field with no API mapping"),
    ("gcp:artifactregistry/repository:Repository",
     lambda i: i["cleanupPolicies"].append({"id": "old", "action": "DELETE", "mostRecentVersions": {"keepCount": 5}}),
     "mostRecentVersions applies to KEEP policies only"),
    ("gcp:artifactregistry/repository:Repository", lambda i: i.update(format="DOCKERS"),
     "Invalid enum value DOCKERS"),
    ("gcp:storage/bucket:Bucket", lambda i: i.update(publicAccessPrevention="on"), "'inherited' or 'enforced'"),
    ("gcp:storage/bucket:Bucket", lambda i: i.update(name="google-models"), "is not a bucket name"),
], ids=case_id)
def test_other_resource_mutations_fail(plans: Plans, type_token: str,
                                       mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert expected in problems_after(first(plans, type_token), mutate)


def test_a_resource_type_without_a_translator_fails_naming_it() -> None:
    firewall = RecordedResource("gcp:compute/firewall:Firewall", "allow-health", {"name": "allow-health"}, True)
    assert resource_problems(firewall) == [
        "gcp:compute/firewall:Firewall allow-health: no translator for resource type gcp:compute/firewall:Firewall: "
        "add one to tests/api_messages.py (fields mapped as terraform-provider-google's expand functions do)"]


def test_provider_names_become_the_apis(plans: Plans) -> None:
    """The renames the expand functions make land where the API reads them (not merely parse)."""
    gpu_service = next(r for r in plans("dev-everything-on").custom(RUN)
                       if r.inputs["template"].get("nodeSelector"))
    service = translate(gpu_service).message
    c = service.template.containers[0]
    assert {e.name: e.value for e in c.env}["MODEL_NAME"] == "gpu"  # envs -> env
    assert [p.container_port for p in c.ports] == [8080]  # one ports object -> a list of one
    assert service.template.timeout.seconds == 60  # "60s" -> Duration
    assert service.template.node_selector.accelerator == "nvidia-l4"
    assert service.template.gpu_zonal_redundancy_disabled is True
    slo = translate(first(plans, "gcp:monitoring/slo:Slo")).message
    assert slo.rolling_period.seconds == 28 * 86400  # rollingPeriodDays -> rollingPeriod
    assert slo.service_level_indicator.request_based.HasField("good_total_ratio")  # requestBasedSli -> requestBased
    repository = translate(first(plans, "gcp:artifactregistry/repository:Repository")).message
    assert set(repository.cleanup_policies) == {p["id"] for p in first(
        plans, "gcp:artifactregistry/repository:Repository").inputs["cleanupPolicies"]}  # a set -> a map by id
    secret = translate(first(plans, "gcp:secretmanager/secret:Secret")).message
    assert secret.replication.HasField("automatic")  # auto -> automatic
    version = translate(first(plans, "gcp:secretmanager/secretVersion:SecretVersion")).message
    assert version.payload.data.startswith(b"0000")  # the secret payload itself, not a redaction
    rule = translate(first(plans, "gcp:compute/globalForwardingRule:GlobalForwardingRule")).message
    assert rule.I_p_protocol == "TCP"  # ipProtocol -> IPProtocol


def test_project_audit_configs_translate_for_when_the_plan_declares_them() -> None:
    """Data Access audit logs (issue 13, section 5) are a project IAMAuditConfig: ready for the plan to add."""
    audit = RecordedResource("gcp:projects/iAMAuditConfig:IAMAuditConfig", "models-data-access", {
        "project": "my-gcp-project", "service": "storage.googleapis.com",
        "auditLogConfigs": [{"logType": "DATA_READ"}, {"logType": "ADMIN_READ"}]}, True)
    assert resource_problems(audit) == []
    assert [c.log_type for c in translate(audit).message.audit_log_configs] == [3, 1]  # AuditLogConfig.LogType
    audit.inputs["auditLogConfigs"][0]["logType"] = "DATA_READS"
    assert "Invalid enum value DATA_READS" in "\n".join(resource_problems(audit))


@pytest.mark.parametrize(("cpu", "memory", "concurrency", "expected"), [
    ("0.5", "1Gi", 1.0, ""),
    ("0.5", "2Gi", 1.0, "memory 2Gi needs at least 1 vCPU"),
    ("0.25", "1Gi", 1.0, "memory 1Gi needs at least 0.5 vCPU"),
    ("0.5", "1Gi", 4.0, "cpu below 1 needs maxInstanceRequestConcurrency 1"),
    ("0.05", "512Mi", 1.0, "is not a Cloud Run CPU"),
    ("2", "256Mi", 4.0, "under the 512Mi minimum of EXECUTION_ENVIRONMENT_GEN2"),
    ("4", "1Gi", 4.0, "cpu 4 needs at least 2Gi"),
    ("2", "9Gi", 4.0, "memory 9Gi needs at least 4 vCPU"),
    ("8", "33Gi", 4.0, "over Cloud Run's 32Gi"),
    ("1000m", "4Gi", 4.0, ""),
])
def test_cloud_run_cpu_memory_table(plans: Plans, cpu: str, memory: str, concurrency: float, expected: str) -> None:
    """Cloud Run's documented cpu/memory pairs, fractional CPUs included, on a copy of a real dev service."""
    service = first(plans, RUN, "dev")

    def resize(inputs: dict[str, Any]) -> None:
        container(inputs)["resources"]["limits"].update(cpu=cpu, memory=memory)
        inputs["template"]["maxInstanceRequestConcurrency"] = concurrency

    problems = problems_after(service, resize)
    assert (expected in problems) if expected else problems == "", problems
