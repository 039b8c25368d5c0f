"""Translate each planned resource into the Google API message the provider would send, as
terraform-provider-google's expand functions do, and parse it with protobuf rejecting unknown fields.

A plan records inputs as pulumi-gcp receives them (camelCase keys, ints as floats). The provider renames
some fields on the way to the API: Pulumi pluralises list blocks (`envs` for Terraform's `env`), turns
one-item lists into objects (`ports`), and magic-modules' `api_name` renames others (`auto` ->
`automatic`). Sources: GoogleCloudPlatform/magic-modules mmv1/products/<product>/<Resource>.yaml (the
definitions terraform-provider-google's `expand...` functions are generated from), cited per field where
the mapping is not the identity.

Every provider field must be listed in its resource type's spec: an unlisted one (a typo, or a field
the program started to set) fails the translation instead of being dropped, and so does a resource type
with no translator. Fields that are not in the message body are listed too: PARAM (the request URL:
project, location, ids) or PROVIDER (provider-only settings such as deletion protection).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.cloud import _storage_v2 as storage_v2  # the Storage v2 API's messages, shipped by google-cloud-storage
from google.cloud import (
    artifactregistry_v1,
    compute_v1,
    iam_admin_v1,
    monitoring_dashboard_v1,
    monitoring_v3,
    run_v2,
    secretmanager_v1,
)
from google.iam.v1 import policy_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fleet.mocks import RecordedResource
from fleet.program import SECRET_SIG, SECRET_SIG_KEY


class Untranslatable(Exception):
    """A provider field with no API mapping, or a value the API's schema rejects."""


@dataclass(frozen=True)
class F:
    """Where one provider field goes: API field `api` ("*": merged into the enclosing object), with its
    nested `spec` applied (to each item of a list) or its value passed through `convert`."""

    api: str
    spec: Spec | None = None
    convert: Callable[[Any], Any] | None = None


class _Marker(str):
    """A field that is not part of the message body."""


PARAM = _Marker("PARAM")  # in the request URL (project, location, the resource's id, its parent)
PROVIDER = _Marker("PROVIDER")  # a provider-only setting, never sent to the API
KEEP = _Marker("KEEP")  # same name, value unchanged (protobuf parsing checks what is inside)

# A spec maps each provider field to KEEP, a renamed API field (str), a nested spec (dict), F, PARAM or PROVIDER.
Spec = dict[str, Any]


@dataclass(frozen=True)
class Translator:
    """How one provider resource type becomes one API message."""

    message: type[Message]  # the raw protobuf class (`ProtoPlusType.pb()` for proto-plus messages)
    spec: Spec
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # what an expand/encoder adds


@dataclass(frozen=True)
class ApiMessage:
    """A planned resource as its API message, plus the fields that go in the request URL."""

    type: str
    name: str
    message: Message
    params: dict[str, Any]


def _seconds(value: float) -> str:
    if value != int(value):
        raise Untranslatable(f"{value}: the provider takes whole numbers here")
    return f"{int(value)}s"


def _wrap(value: Any) -> list[Any]:
    return [value]


def _map_by_id(policies: list[dict[str, Any]]) -> dict[str, Any]:
    return {p["id"]: p for p in policies}


def _apply(value: Any, spec: Spec, where: str, params: dict[str, Any] | None) -> Any:
    """`value` (an object, or a list of them) with its fields renamed and converted by `spec`; top-level
    request parameters go to `params`. Untranslatable on any field the spec does not list."""
    if isinstance(value, list):
        return [_apply(item, spec, f"{where}[{i}]", None) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        raise Untranslatable(f"{where}: expected an object, got {value!r}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key not in spec:
            raise Untranslatable(f"{path}: provider field with no API mapping (a typo, or a field this "
                                 "translator does not know yet: map it as the provider's expand does)")
        entry = spec[key]
        if entry is PARAM or entry is PROVIDER:
            if entry is PARAM and params is not None:
                params[key] = item
            elif entry is PARAM:
                raise Untranslatable(f"{path}: only top-level fields can be request parameters")
            continue
        if isinstance(entry, dict):
            entry = F(key, spec=entry)
        elif isinstance(entry, str):
            entry = F(key if entry is KEEP else entry)
        if entry.spec is not None:
            item = _apply(item, entry.spec, path, None)
        if entry.convert is not None:
            item = entry.convert(item)
        if entry.api == "*":
            out.update(item)
        else:
            out[entry.api] = item
    return out


def _unsecret(value: Any) -> Any:
    """Secret inputs travel wrapped ({sig: ..., value: ...}); the API receives the value."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return _unsecret(value.get("value"))
        return {k: _unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecret(v) for v in value]
    return value


# --- Cloud Run v2 (mmv1/products/cloudrunv2/Service.yaml) ---------------------------------------------------
_PROBE: Spec = {"initialDelaySeconds": KEEP, "timeoutSeconds": KEEP, "periodSeconds": KEEP,
                "failureThreshold": KEEP, "httpGet": KEEP, "tcpSocket": KEEP, "grpc": KEEP}
_CONTAINER: Spec = {
    "name": KEEP, "image": KEEP, "args": KEEP, "workingDir": KEEP, "baseImageUri": KEEP,
    "commands": "command",  # Terraform `command` (a list; Pulumi pluralises it)
    "envs": F("env", spec={"name": KEEP, "value": KEEP, "valueSource": KEEP}),  # Terraform/API `env`
    "resources": {"limits": KEEP, "cpuIdle": KEEP, "startupCpuBoost": KEEP},
    # `ports` is an Array with max_size 1 in the API; Pulumi makes one-item lists a single object.
    "ports": F("ports", spec={"name": KEEP, "containerPort": KEEP}, convert=_wrap),
    "volumeMounts": {"name": KEEP, "mountPath": KEEP, "subPath": KEEP},
    "startupProbe": _PROBE, "livenessProbe": _PROBE,
    "dependsOns": "dependsOn",  # Terraform `depends_on`
}
_VOLUME: Spec = {"name": KEEP, "secret": {"secret": KEEP, "defaultMode": KEEP, "items": KEEP},
                 "gcs": {"bucket": KEEP, "readOnly": KEEP, "mountOptions": KEEP},
                 "emptyDir": KEEP, "cloudSqlInstance": KEEP, "nfs": KEEP}
_CLOUD_RUN = Translator(run_v2.Service.pb(), {
    "name": PARAM,  # url_param_only: the serviceId of the create call
    "location": PARAM, "project": PARAM,
    "deletionProtection": PROVIDER,  # a virtual field of the provider: refuses `destroy`, never sent
    "description": KEEP, "labels": KEEP, "annotations": KEEP, "client": KEEP, "clientVersion": KEEP,
    "ingress": KEEP, "launchStage": KEEP, "invokerIamDisabled": KEEP, "customAudiences": KEEP,
    "defaultUriDisabled": KEEP, "binaryAuthorization": KEEP,
    "scaling": {"minInstanceCount": KEEP, "scalingMode": KEEP, "manualInstanceCount": KEEP},
    "traffics": F("traffic", spec={"type": KEEP, "revision": KEEP, "percent": KEEP, "tag": KEEP}),
    "template": {
        "revision": KEEP, "labels": KEEP, "annotations": KEEP, "timeout": KEEP, "serviceAccount": KEEP,
        "executionEnvironment": KEEP, "encryptionKey": KEEP, "maxInstanceRequestConcurrency": KEEP,
        "sessionAffinity": KEEP, "vpcAccess": KEEP, "healthCheckDisabled": KEEP,
        "scaling": {"minInstanceCount": KEEP, "maxInstanceCount": KEEP},
        "containers": _CONTAINER, "volumes": _VOLUME,
        "nodeSelector": {"accelerator": KEEP}, "gpuZonalRedundancyDisabled": KEEP,
    },
})

# --- Cloud Monitoring (mmv1/products/monitoring/*.yaml) -----------------------------------------------------
_AGGREGATION: Spec = {"alignmentPeriod": KEEP, "perSeriesAligner": KEEP, "crossSeriesReducer": KEEP,
                      "groupByFields": KEEP}
_ALERT_POLICY = Translator(monitoring_v3.AlertPolicy.pb(), {
    "project": PARAM,
    "displayName": KEEP, "combiner": KEEP, "enabled": KEEP, "notificationChannels": KEEP, "userLabels": KEEP,
    "severity": KEEP,
    "documentation": {"content": KEEP, "mimeType": KEEP, "subject": KEEP, "links": KEEP},
    "alertStrategy": {"autoClose": KEEP, "notificationRateLimit": KEEP, "notificationPrompts": KEEP,
                      "notificationChannelStrategies": "notificationChannelStrategy"},  # Terraform singular
    "conditions": {
        "displayName": KEEP,
        "conditionThreshold": {
            "filter": KEEP, "comparison": KEEP, "thresholdValue": KEEP, "duration": KEEP, "trigger": KEEP,
            "aggregations": _AGGREGATION, "denominatorFilter": KEEP, "denominatorAggregations": _AGGREGATION,
            "evaluationMissingData": KEEP, "forecastOptions": KEEP},
        "conditionAbsent": {"filter": KEEP, "duration": KEEP, "trigger": KEEP, "aggregations": _AGGREGATION},
        "conditionMatchedLog": KEEP, "conditionMonitoringQueryLanguage": KEEP,
        "conditionPrometheusQueryLanguage": KEEP,
    },
})
_UPTIME_CHECK = Translator(monitoring_v3.UptimeCheckConfig.pb(), {
    "project": PARAM,
    "displayName": KEEP, "period": KEEP, "timeout": KEEP, "userLabels": KEEP, "selectedRegions": KEEP,
    "checkerType": KEEP, "monitoredResource": {"type": KEEP, "labels": KEEP}, "contentMatchers": KEEP,
    "httpCheck": {"path": KEEP, "port": KEEP, "useSsl": KEEP, "validateSsl": KEEP, "requestMethod": KEEP,
                  "headers": KEEP, "maskHeaders": KEEP, "body": KEEP, "contentType": KEEP,
                  "acceptedResponseStatusCodes": KEEP},
    "tcpCheck": KEEP,
})
_CUSTOM_SERVICE = Translator(
    monitoring_v3.Service.pb(),
    {"project": PARAM, "serviceId": PARAM, "displayName": KEEP, "userLabels": KEEP, "telemetry": KEEP},
    # Service.yaml's encoder sets the `custom` service type: a CustomService has no fields of its own.
    finish=lambda body: {**body, "custom": {}},
)
_SLO = Translator(monitoring_v3.ServiceLevelObjective.pb(), {
    "project": PARAM, "service": PARAM, "sloId": PARAM,  # the parent service and serviceLevelObjectiveId
    "displayName": KEEP, "goal": KEEP, "userLabels": KEEP, "calendarPeriod": KEEP,
    # Slo.yaml: api_name rollingPeriod, expanded from days to a duration string.
    "rollingPeriodDays": F("rollingPeriod", convert=lambda days: _seconds(days * 86400)),
    # Slo.yaml: serviceLevelIndicator is flatten_object; requestBasedSli has api_name requestBased.
    "requestBasedSli": F("serviceLevelIndicator", convert=lambda sli: {"requestBased": sli}, spec={
        "goodTotalRatio": {"goodServiceFilter": KEEP, "badServiceFilter": KEEP, "totalServiceFilter": KEEP},
        "distributionCut": {"distributionFilter": KEEP, "range": KEEP}}),
    "windowsBasedSli": F("serviceLevelIndicator", convert=lambda sli: {"windowsBased": sli}),
    "basicSli": F("serviceLevelIndicator", convert=lambda sli: {"basicSli": sli}),
})
_NOTIFICATION_CHANNEL = Translator(monitoring_v3.NotificationChannel.pb(), {
    "project": PARAM,
    "type": KEEP, "displayName": KEEP, "description": KEEP, "labels": KEEP, "userLabels": KEEP, "enabled": KEEP,
    "forceDelete": PROVIDER,
})
_DASHBOARD = Translator(monitoring_dashboard_v1.Dashboard.pb(), {
    "project": PARAM,
    "dashboardJson": F("*", convert=json.loads),  # the Dashboard resource itself, as JSON
})

# --- Compute (mmv1/products/compute/*.yaml) ----------------------------------------------------------------
_URL_MAP = Translator(compute_v1.UrlMap.pb(), {
    "project": PARAM,
    "name": KEEP, "description": KEEP, "defaultService": KEEP, "defaultUrlRedirect": KEEP,
    "hostRules": {"hosts": KEEP, "pathMatcher": KEEP, "description": KEEP},
    "pathMatchers": {"name": KEEP, "defaultService": KEEP, "description": KEEP, "defaultUrlRedirect": KEEP,
                     "pathRules": {"paths": KEEP, "service": KEEP, "urlRedirect": KEEP}},
})
_BACKEND_SERVICE = Translator(compute_v1.BackendService.pb(), {
    "project": PARAM,
    "name": KEEP, "description": KEEP, "protocol": KEEP, "loadBalancingScheme": KEEP, "timeoutSec": KEEP,
    "logConfig": {"enable": KEEP, "sampleRate": KEEP},
    "backends": {"group": KEEP, "balancingMode": KEEP, "capacityScaler": KEEP, "description": KEEP},
    "securityPolicy": KEEP, "enableCdn": "enableCDN",  # BackendService.yaml: api_name enableCDN
    "outlierDetection": {"consecutiveErrors": KEEP, "enforcingConsecutiveErrors": KEEP, "maxEjectionPercent": KEEP,
                         "interval": KEEP, "baseEjectionTime": KEEP, "consecutiveGatewayFailure": KEEP,
                         "enforcingConsecutiveGatewayFailure": KEEP, "enforcingSuccessRate": KEEP,
                         "successRateMinimumHosts": KEEP, "successRateRequestVolume": KEEP,
                         "successRateStdevFactor": KEEP},
})
_SSL_POLICY = Translator(compute_v1.SslPolicy.pb(), {
    "project": PARAM, "name": KEEP, "description": KEEP, "profile": KEEP, "minTlsVersion": KEEP,
    "customFeatures": KEEP, "postQuantumKeyExchange": KEEP,
})
# google_compute_security_policy is hand-written in the provider (resource_compute_security_policy.go); its
# expand functions keep the API's names (rate_limit_threshold.interval_sec -> rateLimitThreshold.intervalSec).
_RATE_THRESHOLD: Spec = {"count": KEEP, "intervalSec": KEEP}
_SECURITY_POLICY = Translator(compute_v1.SecurityPolicy.pb(), {
    "project": PARAM, "name": KEEP, "description": KEEP, "type": KEEP, "labels": KEEP,
    "deletionPolicy": PROVIDER,
    "rules": {"action": KEEP, "priority": KEEP, "description": KEEP, "preview": KEEP,
              "match": {"versionedExpr": KEEP, "config": {"srcIpRanges": KEEP}, "expr": KEEP},
              "rateLimitOptions": {"conformAction": KEEP, "exceedAction": KEEP, "enforceOnKey": KEEP,
                                   "enforceOnKeyName": KEEP, "banDurationSec": KEEP,
                                   "rateLimitThreshold": _RATE_THRESHOLD, "banThreshold": _RATE_THRESHOLD}},
})
_NEG = Translator(compute_v1.NetworkEndpointGroup.pb(), {
    "project": PARAM, "region": PARAM,
    "name": KEEP, "description": KEEP, "networkEndpointType": KEEP,
    "cloudRun": {"service": KEEP, "tag": KEEP, "urlMask": KEEP},
})
_HTTPS_PROXY = Translator(compute_v1.TargetHttpsProxy.pb(), {
    "project": PARAM, "name": KEEP, "description": KEEP, "urlMap": KEEP, "sslCertificates": KEEP,
    "quicOverride": KEEP, "sslPolicy": KEEP,
})
_HTTP_PROXY = Translator(compute_v1.TargetHttpProxy.pb(), {
    "project": PARAM, "name": KEEP, "description": KEEP, "urlMap": KEEP,
})
_FORWARDING_RULE = Translator(compute_v1.ForwardingRule.pb(), {
    "project": PARAM,
    "name": KEEP, "description": KEEP, "target": KEEP, "portRange": KEEP, "loadBalancingScheme": KEEP,
    "labels": KEEP,
    # GlobalForwardingRule.yaml: api_name IPAddress / IPProtocol.
    "ipAddress": "IPAddress", "ipProtocol": "IPProtocol",
})
_ADDRESS = Translator(compute_v1.Address.pb(), {
    "project": PARAM, "name": KEEP, "description": KEEP, "addressType": KEEP, "ipVersion": KEEP,
    "address": KEEP, "purpose": KEEP, "labels": KEEP,
})
_SSL_CERTIFICATE = Translator(compute_v1.SslCertificate.pb(), {
    "project": PARAM,
    "name": KEEP, "description": KEEP, "type": KEEP, "managed": {"domains": KEEP},
})

# --- Secret Manager (mmv1/products/secretmanager/*.yaml) ----------------------------------------------------
_SECRET = Translator(secretmanager_v1.Secret.pb(), {
    "project": PARAM, "secretId": PARAM,
    "labels": KEEP, "annotations": KEEP, "ttl": KEEP, "expireTime": KEEP, "versionDestroyTtl": KEEP,
    "deletionProtection": PROVIDER,
    # Secret.yaml: replication.auto has api_name automatic.
    "replication": {"auto": F("automatic", spec={"customerManagedEncryption": KEEP}), "userManaged": KEEP},
})
_SECRET_VERSION = Translator(secretmanager_v1.AddSecretVersionRequest.pb(), {
    "secret": F("parent"),  # versions are added to the secret: AddSecretVersion(parent, payload)
    # SecretVersion.yaml: secret_data is sent as payload.data, base64 (bytes in JSON).
    "secretData": F("payload", convert=lambda data: {"data": base64.b64encode(data.encode()).decode()}),
    "deletionPolicy": PROVIDER,  # what the provider does on destroy (delete, disable or abandon the version)
})

# --- IAM -----------------------------------------------------------------------------------------------------
# Every `*IamMember` resource adds one member to one role's binding in its resource's policy
# (tpgiamresource: read-modify-write of the Policy): a google.iam.v1 Binding.
def _binding(resource_fields: tuple[str, ...]) -> Translator:
    spec: Spec = {k: PARAM for k in resource_fields}
    spec.update({"role": KEEP, "member": F("members", convert=_wrap), "condition": KEEP})
    return Translator(policy_pb2.Binding, spec)


_SERVICE_ACCOUNT = Translator(iam_admin_v1.ServiceAccount.pb(), {
    "project": PARAM, "accountId": PARAM,  # CreateServiceAccount(name=projects/p, account_id=...)
    "displayName": KEEP, "description": KEEP, "disabled": KEEP, "createIgnoreAlreadyExists": PROVIDER,
})
_AUDIT_CONFIG = Translator(policy_pb2.AuditConfig, {
    "project": PARAM, "service": KEEP,
    "auditLogConfigs": {"logType": KEEP, "exemptedMembers": KEEP},
})

# --- Artifact Registry, Storage --------------------------------------------------------------------------------
_REPOSITORY = Translator(artifactregistry_v1.Repository.pb(), {
    "project": PARAM, "location": PARAM, "repositoryId": PARAM,
    "format": KEEP, "description": KEEP, "labels": KEEP, "mode": KEEP, "kmsKeyName": KEEP,
    "dockerConfig": {"immutableTags": KEEP},
    "cleanupPolicyDryRun": KEEP,
    # Repository.yaml: cleanup_policies is a set in Terraform and a map keyed by id in the API.
    "cleanupPolicies": F("cleanupPolicies", convert=_map_by_id, spec={
        "id": KEEP, "action": KEEP,
        "condition": {"tagState": KEEP, "tagPrefixes": KEEP, "versionNamePrefixes": KEEP,
                      "packageNamePrefixes": KEEP, "olderThan": KEEP, "newerThan": KEEP},
        "mostRecentVersions": {"keepCount": KEEP, "packageNamePrefixes": KEEP}}),
})
# The provider calls the JSON API (storage/v1), whose `iamConfiguration` is Storage v2's `iamConfig`.
_BUCKET = Translator(storage_v2.Bucket.pb(), {
    "project": PARAM,
    "name": KEEP, "location": KEEP, "storageClass": KEEP, "labels": KEEP,
    "forceDestroy": PROVIDER,  # the provider empties the bucket before deleting it; not a bucket field
    "versioning": {"enabled": KEEP},
    "uniformBucketLevelAccess": F("iamConfig", convert=lambda on: {"uniformBucketLevelAccess": {"enabled": on}}),
    "publicAccessPrevention": F("iamConfig", convert=lambda value: {"publicAccessPrevention": value}),
    "softDeletePolicy": KEEP,
})

TRANSLATORS: dict[str, Translator] = {
    "gcp:cloudrunv2/service:Service": _CLOUD_RUN,
    "gcp:monitoring/alertPolicy:AlertPolicy": _ALERT_POLICY,
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": _UPTIME_CHECK,
    "gcp:monitoring/customService:CustomService": _CUSTOM_SERVICE,
    "gcp:monitoring/slo:Slo": _SLO,
    "gcp:monitoring/notificationChannel:NotificationChannel": _NOTIFICATION_CHANNEL,
    "gcp:monitoring/dashboard:Dashboard": _DASHBOARD,
    "gcp:compute/uRLMap:URLMap": _URL_MAP,
    "gcp:compute/backendService:BackendService": _BACKEND_SERVICE,
    "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": _NEG,
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": _HTTPS_PROXY,
    "gcp:compute/targetHttpProxy:TargetHttpProxy": _HTTP_PROXY,
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": _FORWARDING_RULE,
    "gcp:compute/globalAddress:GlobalAddress": _ADDRESS,
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": _SSL_CERTIFICATE,
    "gcp:compute/sSLPolicy:SSLPolicy": _SSL_POLICY,
    "gcp:compute/securityPolicy:SecurityPolicy": _SECURITY_POLICY,
    "gcp:secretmanager/secret:Secret": _SECRET,
    "gcp:secretmanager/secretVersion:SecretVersion": _SECRET_VERSION,
    "gcp:secretmanager/secretIamMember:SecretIamMember": _binding(("project", "secretId")),
    "gcp:projects/iAMMember:IAMMember": _binding(("project",)),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": _binding(("project", "location", "repository")),
    "gcp:storage/bucketIAMMember:BucketIAMMember": _binding(("bucket",)),
    "gcp:serviceaccount/account:Account": _SERVICE_ACCOUNT,
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": _AUDIT_CONFIG,
    "gcp:artifactregistry/repository:Repository": _REPOSITORY,
    "gcp:storage/bucket:Bucket": _BUCKET,
}
# Resource types that call no Google API with a message of their own.
NOT_GOOGLE_APIS = {
    "docker-build:index:Image": "builds with BuildKit and pushes over the registry (Docker) protocol",
}


def _merge(body: dict[str, Any], key: str, value: Any) -> None:
    """Two provider fields can expand into one API object (iamConfig): merge instead of overwrite."""
    if isinstance(value, dict) and isinstance(body.get(key), dict):
        body[key] = {**body[key], **value}
    else:
        body[key] = value


def body(resource: RecordedResource) -> tuple[dict[str, Any], dict[str, Any], Translator]:
    """The API request body (JSON, API field names) and request parameters of one planned resource."""
    translator = TRANSLATORS.get(resource.type)
    if translator is None:
        raise Untranslatable(f"no translator for resource type {resource.type}: add one to tests/api_messages.py "
                             "(fields mapped as terraform-provider-google's expand functions do)")
    params: dict[str, Any] = {}
    inputs = _unsecret(resource.inputs)
    out: dict[str, Any] = {}
    for key, value in inputs.items():  # top level: several fields may expand into one object
        one = _apply({key: value}, translator.spec, "", params)
        for api_key, api_value in one.items():
            _merge(out, api_key, api_value)
    return (translator.finish(out) if translator.finish else out), params, translator


def translate(resource: RecordedResource) -> ApiMessage:
    """The resource as its API message; Untranslatable names the field the API would refuse."""
    payload, params, translator = body(resource)
    message = translator.message()
    try:
        json_format.ParseDict(payload, message, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise Untranslatable(f"{message.DESCRIPTOR.full_name}: {error}") from None
    _check_string_enums(message, message.DESCRIPTOR.name)
    return ApiMessage(resource.type, resource.name, message, params)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.rstrip("_").split("_"))


def _check_string_enums(message: Message, where: str) -> None:
    """Compute's messages carry enums as strings next to a nested enum of the allowed values (e.g.
    BackendService.load_balancing_scheme and BackendService.LoadBalancingScheme): check them."""
    enums = message.DESCRIPTOR.enum_types_by_name
    for field, value in message.ListFields():
        path = f"{where}.{field.json_name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            items = value if field.label == FieldDescriptor.LABEL_REPEATED else [value]
            for i, item in enumerate(items):
                _check_string_enums(item, f"{path}[{i}]" if field.label == FieldDescriptor.LABEL_REPEATED else path)
        elif field.type == FieldDescriptor.TYPE_STRING:
            enum = enums.get(_camel(field.name)) or enums.get(_camel(field.name) + "Enum")
            if enum is None:
                continue
            allowed = {v.name for v in enum.values if not v.name.startswith(("UNDEFINED_", "INVALID_"))}
            values = value if field.label == FieldDescriptor.LABEL_REPEATED else [value]
            for v in values:
                if v not in allowed:
                    raise Untranslatable(f"{path}: '{v}' is not one of {', '.join(sorted(allowed))}")
