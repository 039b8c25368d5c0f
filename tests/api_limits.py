"""The documented limits Google's APIs apply that their protobuf schemas do not: Cloud Run's cpu/memory
pairs, concurrency, timeouts and probes, Cloud Monitoring's durations, periods and aligners per metric
kind, names and labels.

Each limit is written here from the API's own documentation (cited beside it), never imported from the
program (components/settings.py): a wrong constant there must not make this check agree with it.
`resource_problems(resource)` translates one planned resource (tests/api_messages.py) and returns every
problem as one line naming the resource and the field; an empty list means the API would accept it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from fleet.mocks import PROJECT_NUMBER, RecordedResource
from tests.api_messages import ApiMessage, Untranslatable, translate

Check = Callable[[ApiMessage], Iterator[str]]


def seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _enum_name(message: Message, field: str) -> str:
    return message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[getattr(message, field)].name


# --- names and labels ---------------------------------------------------------------------------------------
# Labels (Resource Manager "Requirements for labels", and every API's `labels` docs): at most 64; keys start
# with a lowercase letter; keys and values up to 63 lowercase letters, digits, '_' and '-'.
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64
# Maps named like labels that are not labels: a monitored resource's and a channel's configuration.
NOT_LABELS = {"google.api.MonitoredResource", "google.monitoring.v3.NotificationChannel"}
# Compute resource names (RFC 1035, compute API `name` docs).
COMPUTE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _labels(message: Message, where: str) -> Iterator[str]:
    """Every `labels`/`user_labels` map in the message, however deep."""
    for field, value in message.ListFields():
        path = f"{where}.{field.json_name}"
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.name in ("labels", "user_labels") and message.DESCRIPTOR.full_name not in NOT_LABELS:
                if len(value) > MAX_LABELS:
                    yield f"{path}: {len(value)} labels, at most {MAX_LABELS}"
                for key, label in value.items():
                    if not LABEL_KEY.match(key):
                        yield f"{path}: key {key!r} is not a label key (lowercase letter first, then up to 62 " \
                              "of [a-z0-9_-])"
                    if not LABEL_VALUE.match(label):
                        yield f"{path}.{key}: value {label!r} is not a label value (up to 63 of [a-z0-9_-])"
            continue
        items = value if field.label == FieldDescriptor.LABEL_REPEATED else [value]
        for item in items:
            yield from _labels(item, path)


# --- Cloud Run (cloud.google.com/run/docs/configuring/services/{cpu,memory-limits,concurrency,request-timeout,
# healthchecks,gpu,environment-variables}) -------------------------------------------------------------------
CLOUD_RUN_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_CLOUD_RUN_NAME = 49  # "Service names must be 49 characters or less"
CPU_CHOICES = {1.0, 2.0, 4.0, 6.0, 8.0}  # whole vCPUs; below 1, fractions from 0.08
MIN_FRACTIONAL_CPU = 0.08
MIB = 1 << 20
GIB = 1 << 30
MAX_MEMORY = 32 * GIB
MIN_MEMORY = {"EXECUTION_ENVIRONMENT_GEN1": 128 * MIB, "EXECUTION_ENVIRONMENT_GEN2": 512 * MIB,
              "EXECUTION_ENVIRONMENT_UNSPECIFIED": 128 * MIB}
# "Memory limits" and "CPU limits": memory above a size needs at least this many vCPUs (below 1 vCPU: 0.5
# for more than 512 MiB, 1 for more than 1 GiB).
MIN_CPU_FOR_MEMORY = [(24 * GIB, 8.0), (16 * GIB, 6.0), (8 * GIB, 4.0), (4 * GIB, 2.0), (1 * GIB, 1.0),
                      (512 * MIB, 0.5), (0, MIN_FRACTIONAL_CPU)]
# "CPU limits": 4 vCPU need at least 2 GiB, 6 and 8 vCPU at least 4 GiB.
MIN_MEMORY_FOR_CPU = {4.0: 2 * GIB, 6.0: 4 * GIB, 8.0: 4 * GIB}
MAX_CONCURRENCY = 1000
MAX_TIMEOUT_S = 3600
# Probes (run_v2 Probe docs and "Configure container health checks"): periods and delays up to 240 s for a
# startup probe and 3600 s for a liveness probe; timeout <= period; a startup probe gives up after
# failureThreshold * periodSeconds, at most 240 s.
PROBE_MAX_S = {"startup_probe": 240, "liveness_probe": 3600}
STARTUP_WINDOW_S = 240
# GPUs ("GPU support for services"): one GPU per instance, at least 4 vCPU and 16 GiB, CPU always allocated.
GPU_ACCELERATORS = {"nvidia-l4", "nvidia-rtx-pro-6000"}
GPU_MIN_CPU, GPU_MIN_MEMORY = 4.0, 16 * GIB
GPU_LIMIT = "nvidia.com/gpu"
# "Container runtime contract": set by Cloud Run, refused in a revision's env.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
MAX_ENV_VALUE = 32768
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
UNITS = {None: 1, "Ki": 1 << 10, "Mi": MIB, "Gi": GIB, "Ti": 1 << 40, "k": 10**3, "K": 10**3, "M": 10**6,
         "G": 10**9, "T": 10**12}


def memory_bytes(text: str) -> int | None:
    """A Kubernetes quantity ('4Gi', '512Mi', '1G') in bytes; None when it is not one."""
    match = QUANTITY.match(text)
    return int(float(match.group(1)) * UNITS[match.group(2)]) if match else None


def cpu_count(text: str) -> float | None:
    """'2' -> 2.0, '1000m' -> 1.0; None when it is not a CPU quantity."""
    match = re.match(r"^(\d+(?:\.\d+)?)(m?)$", text)
    return None if not match else float(match.group(1)) / (1000 if match.group(2) else 1)


def _cpu_memory(cpu_text: str, memory_text: str, environment: str, where: str) -> Iterator[str]:
    cpu, memory = cpu_count(cpu_text), memory_bytes(memory_text)
    if cpu is None or not (cpu in CPU_CHOICES or MIN_FRACTIONAL_CPU <= cpu < 1):
        yield f"{where}.cpu: {cpu_text!r} is not a Cloud Run CPU (1, 2, 4, 6, 8, or a fraction from 0.08 below 1)"
        return
    if memory is None:
        yield f"{where}.memory: {memory_text!r} is not a memory quantity (e.g. '4Gi')"
        return
    if memory > MAX_MEMORY:
        yield f"{where}.memory: {memory_text} is over Cloud Run's 32Gi"
    if memory < MIN_MEMORY.get(environment, 0):
        yield f"{where}.memory: {memory_text} is under the {MIN_MEMORY[environment] // MIB}Mi minimum of {environment}"
    needed = next(c for size, c in MIN_CPU_FOR_MEMORY if memory > size or size == 0)
    if cpu < needed:
        yield f"{where}: memory {memory_text} needs at least {needed:g} vCPU (got cpu {cpu_text})"
    if memory < MIN_MEMORY_FOR_CPU.get(cpu, 0):
        yield f"{where}: cpu {cpu_text} needs at least {MIN_MEMORY_FOR_CPU[cpu] // GIB}Gi of memory (got {memory_text})"


def _probe(probe: Message, kind: str, where: str) -> Iterator[str]:
    most = PROBE_MAX_S[kind]
    period = probe.period_seconds or 10  # API defaults: period 10 s, timeout 1 s, failureThreshold 3
    timeout = probe.timeout_seconds or 1
    failures = probe.failure_threshold or 3
    if not 1 <= period <= most:
        yield f"{where}.periodSeconds: {period} outside 1-{most}"
    if not 1 <= timeout <= period:
        yield f"{where}.timeoutSeconds: {timeout} must be 1 to periodSeconds ({period})"
    if not 0 <= probe.initial_delay_seconds <= most:
        yield f"{where}.initialDelaySeconds: {probe.initial_delay_seconds} outside 0-{most}"
    if failures < 1:
        yield f"{where}.failureThreshold: {failures} below 1"
    if kind == "startup_probe" and failures * period > STARTUP_WINDOW_S:
        yield (f"{where}: failureThreshold x periodSeconds = {failures * period} s, over the "
               f"{STARTUP_WINDOW_S} s a startup probe may take")
    if probe.HasField("http_get") and probe.http_get.port and not 1 <= probe.http_get.port <= 65535:
        yield f"{where}.httpGet.port: {probe.http_get.port} is not a TCP port"


def _cloud_run(api: ApiMessage) -> Iterator[str]:
    service, name = api.message, str(api.params.get("name", ""))
    if not CLOUD_RUN_NAME.match(name) or len(name) > MAX_CLOUD_RUN_NAME:
        yield (f"name: {name!r} is not a Cloud Run service name (a lowercase letter, then lowercase letters, "
               f"digits and '-', not ending in '-', at most {MAX_CLOUD_RUN_NAME})")
    if len(service.description) > 512:  # Service.description: "a 512-character limit"
        yield "description: over 512 characters"
    t = service.template
    # RevisionTemplate.revision: "must be prefixed by the Service name followed by '-'", 63 at most, a DNS label.
    if t.revision and (not t.revision.startswith(f"{name}-") or len(t.revision) > 63
                       or not CLOUD_RUN_NAME.match(t.revision)):
        yield f"template.revision: {t.revision!r} is not '{name}-<suffix>' of at most 63 DNS-label characters"
    if service.traffic and sum(target.percent for target in service.traffic) != 100:
        yield f"traffic: percentages sum to {sum(target.percent for target in service.traffic)}, not 100"
    for target in service.traffic:
        if _enum_name(target, "type_") == "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION" and not target.revision:
            yield "traffic: a REVISION target names no revision"
    environment = _enum_name(t, "execution_environment")
    timeout = seconds(t.timeout) if t.HasField("timeout") else 300
    if not 1 <= timeout <= MAX_TIMEOUT_S:
        yield f"template.timeout: {timeout:g} s outside 1-{MAX_TIMEOUT_S} s"
    if not 0 <= t.max_instance_request_concurrency <= MAX_CONCURRENCY:  # 0: Cloud Run's default (80)
        yield (f"template.maxInstanceRequestConcurrency: {t.max_instance_request_concurrency} outside "
               f"1-{MAX_CONCURRENCY}")
    scaling = t.scaling
    if scaling.max_instance_count and scaling.min_instance_count > scaling.max_instance_count:
        yield (f"template.scaling: minInstanceCount {scaling.min_instance_count} above maxInstanceCount "
               f"{scaling.max_instance_count}")
    volumes = [v.name for v in t.volumes]
    if len(set(volumes)) != len(volumes):
        yield f"template.volumes: names repeat: {volumes}"
    for v in t.volumes:
        if (v.HasField("gcs") or v.HasField("nfs")) and environment != "EXECUTION_ENVIRONMENT_GEN2":
            yield f"template.volumes[{v.name}]: Cloud Storage and NFS volumes need EXECUTION_ENVIRONMENT_GEN2"
    gpus = 0
    for i, c in enumerate(t.containers):
        where = f"template.containers[{i}]"
        limits = dict(c.resources.limits)
        yield from _cpu_memory(limits.get("cpu", "1"), limits.get("memory", "512Mi"), environment,
                               f"{where}.resources.limits")
        cpu = cpu_count(limits.get("cpu", "1")) or 0
        if cpu < 1 and t.max_instance_request_concurrency != 1:  # "CPU limits": below 1 vCPU
            yield f"{where}: cpu below 1 needs maxInstanceRequestConcurrency 1"
        if cpu < 1 and not c.resources.cpu_idle:
            yield f"{where}: cpu below 1 needs request-based billing (cpuIdle true)"
        unknown = set(limits) - {"cpu", "memory", GPU_LIMIT}
        if unknown:
            yield f"{where}.resources.limits: only cpu, memory and {GPU_LIMIT} are supported, not {sorted(unknown)}"
        if GPU_LIMIT in limits:
            gpus += 1
            if limits[GPU_LIMIT] != "1":
                yield f"{where}.resources.limits.{GPU_LIMIT}: {limits[GPU_LIMIT]!r}, Cloud Run attaches exactly 1"
            if cpu < GPU_MIN_CPU or (memory_bytes(limits.get("memory", "0")) or 0) < GPU_MIN_MEMORY:
                yield f"{where}: a GPU needs at least 4 vCPU and 16Gi (got {limits.get('cpu')}, {limits.get('memory')})"
            if c.resources.cpu_idle:  # no presence: unset reads false, which the provider sends
                yield f"{where}.resources.cpuIdle: a GPU needs CPU always allocated (cpuIdle false)"
        for port in c.ports:
            if not 1 <= port.container_port <= 65535:
                yield f"{where}.ports.containerPort: {port.container_port} is not a TCP port"
        names = [e.name for e in c.env]
        for e in c.env:
            if not e.name or "=" in e.name or e.name in RESERVED_ENV or e.name.startswith("X_GOOGLE_"):
                yield f"{where}.env[{e.name!r}]: reserved or invalid environment variable name"
            if len(e.value) > MAX_ENV_VALUE:
                yield f"{where}.env[{e.name}]: value over {MAX_ENV_VALUE} characters"
        if len(set(names)) != len(names):
            yield f"{where}.env: names repeat"
        mounts = [m.mount_path for m in c.volume_mounts]
        if len(set(mounts)) != len(mounts):
            yield f"{where}.volumeMounts: mount paths repeat: {mounts}"
        for m in c.volume_mounts:
            if m.name not in volumes:
                yield f"{where}.volumeMounts[{m.name}]: no volume of that name"
        for kind in ("startup_probe", "liveness_probe"):
            if c.HasField(kind):
                yield from _probe(getattr(c, kind), kind, f"{where}.{kind}")
    accelerator = t.node_selector.accelerator if t.HasField("node_selector") else ""
    if gpus and accelerator not in GPU_ACCELERATORS:
        yield f"template.nodeSelector.accelerator: {accelerator!r}, a GPU needs one of {sorted(GPU_ACCELERATORS)}"
    if accelerator and not gpus:
        yield f"template.nodeSelector: accelerator {accelerator!r} without a {GPU_LIMIT} limit"
    if t.gpu_zonal_redundancy_disabled and not gpus:
        yield "template.gpuZonalRedundancyDisabled: set on a service without a GPU"


# --- Cloud Monitoring -----------------------------------------------------------------------------------------
# Cloud Run's metrics (cloud.google.com/monitoring/api/metrics_gcp_p_z, "run"): metric kind and value type.
CLOUD_RUN_METRICS = {
    "run.googleapis.com/request_count": ("DELTA", "INT64"),
    "run.googleapis.com/request_latencies": ("DELTA", "DISTRIBUTION"),
    "run.googleapis.com/container/instance_count": ("GAUGE", "INT64"),
    "run.googleapis.com/container/startup_latencies": ("DELTA", "DISTRIBUTION"),
    "run.googleapis.com/container/billable_instance_time": ("DELTA", "DOUBLE"),
    "run.googleapis.com/container/cpu/utilizations": ("DELTA", "DISTRIBUTION"),
    "run.googleapis.com/container/memory/utilizations": ("DELTA", "DISTRIBUTION"),
    "run.googleapis.com/container/max_request_concurrencies": ("DELTA", "DISTRIBUTION"),
    # The global external Application Load Balancer's (metrics_gcp_i_o, "loadbalancing", https_lb_rule).
    "loadbalancing.googleapis.com/https/request_count": ("DELTA", "INT64"),
    "loadbalancing.googleapis.com/https/total_latencies": ("DELTA", "DISTRIBUTION"),
}
NUMERIC = {"INT64", "DOUBLE", "MONEY"}
DIST, BOOL, STRING = "DISTRIBUTION", "BOOL", "STRING"
ANY_TYPE = NUMERIC | {DIST, BOOL, STRING}
# google.monitoring.v3.Aggregation.Aligner's documentation: the metric kinds and value types each aligner is
# valid for, and the value type it outputs (None: the input's).
ALIGNERS: dict[str, tuple[set[str], set[str], str | None]] = {
    "ALIGN_NONE": ({"GAUGE", "DELTA", "CUMULATIVE"}, ANY_TYPE, None),
    "ALIGN_DELTA": ({"CUMULATIVE", "DELTA"}, NUMERIC | {DIST}, None),
    "ALIGN_RATE": ({"CUMULATIVE", "DELTA"}, NUMERIC, "DOUBLE"),
    "ALIGN_INTERPOLATE": ({"GAUGE"}, NUMERIC, None),
    "ALIGN_NEXT_OLDER": ({"GAUGE"}, ANY_TYPE, None),
    "ALIGN_MIN": ({"GAUGE", "DELTA"}, NUMERIC, None),
    "ALIGN_MAX": ({"GAUGE", "DELTA"}, NUMERIC, None),
    "ALIGN_MEAN": ({"GAUGE", "DELTA"}, NUMERIC, "DOUBLE"),
    "ALIGN_COUNT": ({"GAUGE", "DELTA"}, NUMERIC | {BOOL}, "INT64"),
    "ALIGN_SUM": ({"GAUGE", "DELTA"}, NUMERIC | {DIST}, None),
    "ALIGN_STDDEV": ({"GAUGE", "DELTA"}, NUMERIC, "DOUBLE"),
    "ALIGN_COUNT_TRUE": ({"GAUGE"}, {BOOL}, "INT64"),
    "ALIGN_COUNT_FALSE": ({"GAUGE"}, {BOOL}, "INT64"),
    "ALIGN_FRACTION_TRUE": ({"GAUGE"}, {BOOL}, "DOUBLE"),
    "ALIGN_PERCENTILE_99": ({"GAUGE", "DELTA"}, {DIST}, "DOUBLE"),
    "ALIGN_PERCENTILE_95": ({"GAUGE", "DELTA"}, {DIST}, "DOUBLE"),
    "ALIGN_PERCENTILE_50": ({"GAUGE", "DELTA"}, {DIST}, "DOUBLE"),
    "ALIGN_PERCENTILE_05": ({"GAUGE", "DELTA"}, {DIST}, "DOUBLE"),
    "ALIGN_PERCENT_CHANGE": ({"GAUGE", "DELTA"}, NUMERIC, "DOUBLE"),
}
# Aggregation.Reducer's documentation: the value types (of the aligned series) each reducer is valid for.
REDUCERS: dict[str, set[str]] = {
    "REDUCE_NONE": ANY_TYPE,
    "REDUCE_MEAN": NUMERIC | {DIST}, "REDUCE_MIN": NUMERIC, "REDUCE_MAX": NUMERIC, "REDUCE_SUM": NUMERIC | {DIST},
    "REDUCE_STDDEV": NUMERIC | {DIST}, "REDUCE_COUNT": ANY_TYPE, "REDUCE_COUNT_TRUE": {BOOL},
    "REDUCE_COUNT_FALSE": {BOOL}, "REDUCE_FRACTION_TRUE": {BOOL},
    **{f"REDUCE_PERCENTILE_{p}": NUMERIC | {DIST} for p in ("99", "95", "50", "05")},
}
METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
MIN_ALIGNMENT_S = 60  # Aggregation.alignment_period: "must be at least 60 seconds"


def metric_of(filter_: str, where: str) -> tuple[tuple[str, str] | None, list[str]]:
    """(kind, value type) of the one metric a filter selects, or the problem with it."""
    metrics = METRIC_TYPE.findall(filter_)
    if len(metrics) != 1:
        return None, [f"{where}: the filter names {len(metrics)} metric types, expected one"]
    if metrics[0] not in CLOUD_RUN_METRICS:
        return None, [f"{where}: metric {metrics[0]} is not in tests/api_limits.py's CLOUD_RUN_METRICS; add its "
                      "kind and value type from Google's metrics list"]
    return CLOUD_RUN_METRICS[metrics[0]], []


def _aggregation(aggregation: Message, metric: tuple[str, str], where: str) -> Iterator[str]:
    kind, value_type = metric
    aligner = _enum_name(aggregation, "per_series_aligner")
    reducer = _enum_name(aggregation, "cross_series_reducer")
    kinds, types, output = ALIGNERS[aligner]
    if kind not in kinds or value_type not in types:
        yield f"{where}.perSeriesAligner: {aligner} is not valid for a {kind} {value_type} metric"
    if aligner != "ALIGN_NONE" and seconds(aggregation.alignment_period) < MIN_ALIGNMENT_S:
        yield f"{where}.alignmentPeriod: {seconds(aggregation.alignment_period):g} s, at least {MIN_ALIGNMENT_S} s"
    if reducer != "REDUCE_NONE":
        if aligner == "ALIGN_NONE":
            yield f"{where}.crossSeriesReducer: {reducer} needs a perSeriesAligner other than ALIGN_NONE"
        if (output or value_type) not in REDUCERS[reducer]:
            yield f"{where}.crossSeriesReducer: {reducer} is not valid for {aligner}'s {output or value_type} output"


def _aggregations(filter_: str, aggregations: list[Message], where: str) -> Iterator[str]:
    metric, problems = metric_of(filter_, where)
    yield from problems
    if metric:
        for i, aggregation in enumerate(aggregations):
            yield from _aggregation(aggregation, metric, f"{where}.aggregations[{i}]")


def _whole_minutes(d: Duration, where: str, least: int = 0) -> Iterator[str]:
    if seconds(d) % 60 or seconds(d) < least:
        yield f"{where}: {seconds(d):g} s, must be a multiple of 60 s" + (f" and at least {least} s" if least else "")


def _alert_policy(api: ApiMessage) -> Iterator[str]:
    policy = api.message
    if not 1 <= len(policy.conditions) <= 6:
        yield f"conditions: {len(policy.conditions)}, a policy has one to six"
    if len(policy.display_name) > 512:
        yield "displayName: over 512 characters"
    if _enum_name(policy, "combiner") == "COMBINE_UNSPECIFIED":
        yield "combiner: unset"
    doc = policy.documentation
    if len(doc.content) > 8192 or len(doc.content.encode()) > 10240:
        yield "documentation.content: over 8,192 characters or 10,240 bytes"
    if doc.content and doc.mime_type != "text/markdown":
        yield f"documentation.mimeType: {doc.mime_type!r}, only text/markdown"
    for name in policy.notification_channels:
        if not re.match(r"^projects/[^/]+/notificationChannels/[^/]+$", name):
            yield f"notificationChannels: {name!r} is not a channel's resource name"
    for i, c in enumerate(policy.conditions):
        where = f"conditions[{i}]"
        if c.HasField("condition_threshold"):
            t = c.condition_threshold
            yield from _whole_minutes(t.duration, f"{where}.conditionThreshold.duration")
            yield from _aggregations(t.filter, list(t.aggregations), f"{where}.conditionThreshold")
            if t.denominator_filter:
                yield from _aggregations(t.denominator_filter, list(t.denominator_aggregations),
                                         f"{where}.conditionThreshold.denominator")
            if _enum_name(t, "comparison") == "COMPARISON_UNSPECIFIED":
                yield f"{where}.conditionThreshold.comparison: unset"
        elif c.HasField("condition_absent"):
            a = c.condition_absent
            yield from _whole_minutes(a.duration, f"{where}.conditionAbsent.duration", least=120)
            yield from _aggregations(a.filter, list(a.aggregations), f"{where}.conditionAbsent")


# UptimeCheckConfig docs: period one of 60s, 300s, 600s, 900s; timeout 1-60 s.
UPTIME_PERIODS_S = {60, 300, 600, 900}


def _uptime_check(api: ApiMessage) -> Iterator[str]:
    check = api.message
    period = seconds(check.period) if check.HasField("period") else 60
    if period not in UPTIME_PERIODS_S:
        yield f"period: {period:g} s, one of {sorted(UPTIME_PERIODS_S)} s"
    if not 1 <= seconds(check.timeout) <= 60:
        yield f"timeout: {seconds(check.timeout):g} s, must be 1-60 s"
    if check.HasField("http_check") and check.http_check.port and not 1 <= check.http_check.port <= 65535:
        yield f"httpCheck.port: {check.http_check.port} is not a TCP port"
    resource = check.monitored_resource
    if resource.type == "uptime_url" and set(resource.labels) != {"project_id", "host"}:
        yield f"monitoredResource.labels: uptime_url takes project_id and host, got {sorted(resource.labels)}"
    if check.selected_regions and len(check.selected_regions) < 3:
        yield "selectedRegions: at least 3 regions when set"


MONITORING_ID = re.compile(r"^[a-z0-9-]+$")  # CreateServiceRequest.service_id / Slo.yaml's slo_id pattern


def _custom_service(api: ApiMessage) -> Iterator[str]:
    if not MONITORING_ID.match(str(api.params.get("serviceId", ""))):
        yield f"serviceId: {api.params.get('serviceId')!r} must match [a-z0-9-]+"


def _slo(api: ApiMessage) -> Iterator[str]:
    slo = api.message
    if not 0 < slo.goal <= 0.9999:
        yield f"goal: {slo.goal}, must be in (0, 0.9999]"
    if not MONITORING_ID.match(str(api.params.get("sloId", ""))):
        yield f"sloId: {api.params.get('sloId')!r} must match [a-z0-9-]+"
    if slo.HasField("rolling_period"):
        days = seconds(slo.rolling_period) / 86400
        if days != int(days) or not 1 <= days <= 30:
            yield f"rollingPeriod: {days:g} days, a whole number of days up to 30"
    request = slo.service_level_indicator.request_based
    if request.HasField("good_total_ratio"):
        ratio = request.good_total_ratio
        filters = {k: getattr(ratio, k) for k in ("good_service_filter", "bad_service_filter", "total_service_filter")}
        if sum(bool(v) for v in filters.values()) != 2:
            yield "requestBased.goodTotalRatio: exactly two of good, bad and total service filters"
        for key, filter_ in filters.items():
            if filter_:
                metric, problems = metric_of(filter_, f"requestBased.goodTotalRatio.{key}")
                yield from problems
                if metric and (metric[0] not in ("DELTA", "CUMULATIVE") or metric[1] not in ("INT64", "DOUBLE")):
                    yield f"requestBased.goodTotalRatio.{key}: needs a DELTA or CUMULATIVE INT64/DOUBLE metric"
    if request.HasField("distribution_cut"):
        cut = request.distribution_cut
        metric, problems = metric_of(cut.distribution_filter, "requestBased.distributionCut")
        yield from problems
        if metric and (metric[0] not in ("DELTA", "CUMULATIVE") or metric[1] != DIST):
            yield "requestBased.distributionCut: needs a DELTA or CUMULATIVE DISTRIBUTION metric"
        bounds = cut.range_  # proto-plus renames fields named like Python builtins: range_, min_, max_
        if bounds.max_ and bounds.min_ >= bounds.max_:
            yield "requestBased.distributionCut.range: min must be below max"


MAX_DASHBOARD_COLUMNS = 48  # MosaicLayout: "between 1 and 48"


def _time_series_filters(message: Message, where: str) -> Iterator[tuple[Message, str]]:
    """Every TimeSeriesFilter in a dashboard, however deep."""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        items = value if field.label == FieldDescriptor.LABEL_REPEATED else [value]
        for i, item in enumerate(items):
            path = f"{where}.{field.json_name}" + (f"[{i}]" if field.label == FieldDescriptor.LABEL_REPEATED else "")
            if item.DESCRIPTOR.name == "TimeSeriesFilter":
                yield item, path
            else:
                yield from _time_series_filters(item, path)


def _dashboard(api: ApiMessage) -> Iterator[str]:
    dashboard = api.message
    if not dashboard.display_name:
        yield "displayName: required"
    if dashboard.HasField("mosaic_layout"):
        layout = dashboard.mosaic_layout
        columns = layout.columns or MAX_DASHBOARD_COLUMNS
        if not 1 <= columns <= MAX_DASHBOARD_COLUMNS:
            yield f"mosaicLayout.columns: {columns}, must be 1-{MAX_DASHBOARD_COLUMNS}"
        occupied: dict[tuple[int, int], int] = {}
        for i, tile in enumerate(layout.tiles):
            if min(tile.x_pos, tile.y_pos) < 0 or min(tile.width, tile.height) < 1 or tile.x_pos + tile.width > columns:
                yield f"mosaicLayout.tiles[{i}]: outside the {columns}-column grid"
            cells = {(x, y) for x in range(tile.x_pos, tile.x_pos + tile.width)
                     for y in range(tile.y_pos, tile.y_pos + tile.height)}
            clash = sorted({occupied[cell] for cell in cells if cell in occupied})
            if clash:
                yield f"mosaicLayout.tiles[{i}]: overlaps tiles {clash}"
            occupied.update(dict.fromkeys(cells, i))
    for series, where in _time_series_filters(dashboard, "dashboard"):
        metric, problems = metric_of(series.filter, where)
        yield from problems
        if metric and series.HasField("aggregation"):
            yield from _aggregation(series.aggregation, metric, f"{where}.aggregation")


# --- Compute ----------------------------------------------------------------------------------------------------
def _compute_name(api: ApiMessage) -> Iterator[str]:
    name = api.message.name
    if name and not COMPUTE_NAME.match(name):
        yield f"name: {name!r} is not a compute name ([a-z]([-a-z0-9]*[a-z0-9])?, at most 63)"


URL_PATH = re.compile(r"^/[^*?#]*(/\*)?$")  # UrlMap PathRule.paths: start with '/', '*' only as a final '/*'


def _url_map(api: ApiMessage) -> Iterator[str]:
    yield from _compute_name(api)
    url_map = api.message
    matchers = [m.name for m in url_map.path_matchers]
    if len(set(matchers)) != len(matchers):
        yield f"pathMatchers: names repeat: {matchers}"
    hosts: list[str] = []
    for rule in url_map.host_rules:
        if rule.path_matcher not in matchers:
            yield f"hostRules: pathMatcher {rule.path_matcher!r} is not defined"
        hosts.extend(rule.hosts)
    if len(set(hosts)) != len(hosts):
        yield "hostRules: a host appears in two rules"
    for m in url_map.path_matchers:
        if not COMPUTE_NAME.match(m.name):
            yield f"pathMatchers[{m.name}]: not a compute name"
        for rule in m.path_rules:
            for path in rule.paths:
                if not URL_PATH.match(path):
                    yield f"pathMatchers[{m.name}].pathRules: {path!r} is not a URL map path"
    if not (url_map.default_service or url_map.HasField("default_url_redirect")):
        yield "defaultService or defaultUrlRedirect: one is required"


HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _ssl_certificate(api: ApiMessage) -> Iterator[str]:
    cert = api.message
    domains = list(cert.managed.domains)
    if cert.type_ == "MANAGED" and not 1 <= len(domains) <= 100:  # "up to 100 domains" per managed certificate
        yield f"managed.domains: {len(domains)}, a managed certificate has 1-100"
    for domain in domains:
        if not HOSTNAME.match(domain):  # managed certificates take no wildcard
            yield f"managed.domains: {domain!r} is not a fully qualified domain name"


def _forwarding_rule(api: ApiMessage) -> Iterator[str]:
    yield from _compute_name(api)
    ports = api.message.port_range.split("-")
    if not all(p.isdigit() and 1 <= int(p) <= 65535 for p in ports) or len(ports) > 2:
        yield f"portRange: {api.message.port_range!r} is not a port or a range"


def _backend_service(api: ApiMessage) -> Iterator[str]:
    yield from _compute_name(api)
    log = api.message.log_config
    if log.HasField("sample_rate") and not 0 <= log.sample_rate <= 1:
        yield f"logConfig.sampleRate: {log.sample_rate}, must be 0-1"


ARMOR_INTERVALS = {10, 30, 60, 120, 180, 240, 300, 600, 900, 1200, 1800, 2700, 3600}  # intervalSec, banDurationSec
DEFAULT_RULE = 2147483647


def _security_policy(api: ApiMessage) -> Iterator[str]:
    """Cloud Armor: priorities unique, a default rule (the lowest priority, matching '*'), rate limits valid."""
    yield from _compute_name(api)
    priorities = [r.priority for r in api.message.rules]
    if len(set(priorities)) != len(priorities):
        yield f"rules: priorities repeat: {priorities}"
    default = [r for r in api.message.rules if r.priority == DEFAULT_RULE]
    if not default or list(default[0].match.config.src_ip_ranges) != ["*"]:
        yield f"rules: no default rule (priority {DEFAULT_RULE} matching '*')"
    for rule in api.message.rules:
        where = f"rules[{rule.priority}]"
        if (rule.action in ("throttle", "rate_based_ban")) != rule.HasField("rate_limit_options"):
            yield f"{where}: rateLimitOptions go with a throttle or rate_based_ban action, only"
        options = rule.rate_limit_options
        for threshold, what in ((options.rate_limit_threshold, "rateLimitThreshold"),
                                (options.ban_threshold, "banThreshold")):
            if threshold.count and threshold.interval_sec not in ARMOR_INTERVALS:
                yield f"{where}.{what}.intervalSec: {threshold.interval_sec} is not a Cloud Armor interval"
        if rule.action == "rate_based_ban" and options.ban_duration_sec not in ARMOR_INTERVALS:
            yield f"{where}.banDurationSec: {options.ban_duration_sec} is not a Cloud Armor duration"


# --- Secret Manager, IAM, Artifact Registry, Storage ---------------------------------------------------------------
SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MAX_SECRET_PAYLOAD = 64 * 1024  # "secret payload ... at most 64 KiB"


def _secret(api: ApiMessage) -> Iterator[str]:
    if not SECRET_ID.match(str(api.params.get("secretId", ""))):
        yield f"secretId: {api.params.get('secretId')!r} must be 1-255 of [A-Za-z0-9_-]"
    if not api.message.HasField("replication"):
        yield "replication: required"


def _secret_version(api: ApiMessage) -> Iterator[str]:
    if len(api.message.payload.data) > MAX_SECRET_PAYLOAD:
        yield f"payload.data: {len(api.message.payload.data)} bytes, at most {MAX_SECRET_PAYLOAD}"


# IAM policy members ("Principal identifiers") and role names.
MEMBER = re.compile(r"^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain|deleted:[a-z]+):[^\s:]+"
                    r"|principal(Set)?://\S+)$")
SERVICE_ACCOUNT_MEMBER = re.compile(r"^serviceAccount:[a-z0-9-]+@[a-z0-9.-]+\.gserviceaccount\.com$")
ROLE = re.compile(r"^(roles/[A-Za-z0-9_.]+|(projects|organizations)/[^/]+/roles/[A-Za-z0-9_.]+)$")


def _binding(api: ApiMessage) -> Iterator[str]:
    binding = api.message
    if not ROLE.match(binding.role):
        yield f"role: {binding.role!r} is not a role name (roles/..., projects/*/roles/...)"
    for planned in binding.members:
        member = planned.replace(PROJECT_NUMBER, "123456789012")  # the mocks' stand-in for the project's number
        account = member.startswith("serviceAccount:")
        if not MEMBER.match(member) or (account and not SERVICE_ACCOUNT_MEMBER.match(member)):
            yield f"members: {planned!r} is not a principal identifier"


SERVICE_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]{4,28}[a-z0-9])$")  # 6-30 characters


def _service_account(api: ApiMessage) -> Iterator[str]:
    account_id = str(api.params.get("accountId", ""))
    if not SERVICE_ACCOUNT_ID.match(account_id):
        yield f"accountId: {account_id!r} must be 6-30 of [a-z0-9-], a letter first, no '-' last"
    if len(api.message.display_name) > 100:
        yield "displayName: over 100 characters"
    if len(api.message.description) > 256:
        yield "description: over 256 characters"


REPOSITORY_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_CLEANUP_POLICIES = 10  # "up to 10 cleanup policies per repository"


def _repository(api: ApiMessage) -> Iterator[str]:
    if not REPOSITORY_ID.match(str(api.params.get("repositoryId", ""))):
        yield f"repositoryId: {api.params.get('repositoryId')!r} is not a repository id"
    policies = api.message.cleanup_policies
    if len(policies) > MAX_CLEANUP_POLICIES:
        yield f"cleanupPolicies: {len(policies)}, at most {MAX_CLEANUP_POLICIES}"
    for key, policy in policies.items():
        action = _enum_name(policy, "action")
        if action == "ACTION_UNSPECIFIED":
            yield f"cleanupPolicies[{key}].action: unset"
        if policy.HasField("most_recent_versions") and action != "KEEP":
            yield f"cleanupPolicies[{key}]: mostRecentVersions applies to KEEP policies only"
        if policy.HasField("most_recent_versions") and policy.most_recent_versions.keep_count < 1:
            yield f"cleanupPolicies[{key}].mostRecentVersions.keepCount: at least 1"
        if not (policy.HasField("condition") or policy.HasField("most_recent_versions")):
            yield f"cleanupPolicies[{key}]: needs a condition or mostRecentVersions"


BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")  # 3-63 characters without dots


def _bucket(api: ApiMessage) -> Iterator[str]:
    bucket = api.message
    if not BUCKET_NAME.match(bucket.name) or bucket.name.startswith("goog") or "google" in bucket.name:
        yield f"name: {bucket.name!r} is not a bucket name (3-63 of [a-z0-9_.-], no 'goog' prefix or 'google')"
    if not bucket.location:
        yield "location: required"
    prevention = bucket.iam_config.public_access_prevention
    if prevention and prevention not in ("inherited", "enforced"):
        yield f"iamConfig.publicAccessPrevention: {prevention!r}, 'inherited' or 'enforced'"


def _audit_config(api: ApiMessage) -> Iterator[str]:
    config = api.message
    if not config.service:
        yield "service: required (e.g. storage.googleapis.com)"
    for entry in config.audit_log_configs:
        if _enum_name(entry, "log_type") == "LOG_TYPE_UNSPECIFIED":
            yield "auditLogConfigs.logType: unset"


CHECKS: dict[str, Check] = {
    "gcp:cloudrunv2/service:Service": _cloud_run,
    "gcp:monitoring/alertPolicy:AlertPolicy": _alert_policy,
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": _uptime_check,
    "gcp:monitoring/customService:CustomService": _custom_service,
    "gcp:monitoring/slo:Slo": _slo,
    "gcp:monitoring/dashboard:Dashboard": _dashboard,
    "gcp:compute/uRLMap:URLMap": _url_map,
    "gcp:compute/backendService:BackendService": _backend_service,
    "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": _compute_name,
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": _compute_name,
    "gcp:compute/targetHttpProxy:TargetHttpProxy": _compute_name,
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": _forwarding_rule,
    "gcp:compute/globalAddress:GlobalAddress": _compute_name,
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": _ssl_certificate,
    "gcp:compute/sSLPolicy:SSLPolicy": _compute_name,
    "gcp:compute/securityPolicy:SecurityPolicy": _security_policy,
    "gcp:secretmanager/secret:Secret": _secret,
    "gcp:secretmanager/secretVersion:SecretVersion": _secret_version,
    "gcp:secretmanager/secretIamMember:SecretIamMember": _binding,
    "gcp:projects/iAMMember:IAMMember": _binding,
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": _binding,
    "gcp:storage/bucketIAMMember:BucketIAMMember": _binding,
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": _audit_config,
    "gcp:artifactregistry/repository:Repository": _repository,
    "gcp:storage/bucket:Bucket": _bucket,
}


def message_problems(api: ApiMessage) -> list[str]:
    """The documented limits one translated message breaks (labels everywhere, then its type's own)."""
    check = CHECKS.get(api.type)
    found = [*_labels(api.message, ""), *(check(api) if check else ())]
    return [f"{api.type} {api.name}: {problem.lstrip('.')}" for problem in found]


def resource_problems(resource: RecordedResource) -> list[str]:
    """Everything the API would refuse in one planned resource: schema first, then documented limits."""
    try:
        api = translate(resource)
    except Untranslatable as error:
        return [f"{resource.type} {resource.name}: {error}"]
    return message_problems(api)

