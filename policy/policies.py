"""The yolo-fleet guardrails as Pulumi CrossGuard policies: what a pull request may not deploy.

The same Policy objects run in `pulumi preview --policy-pack policy` (policy/__main__.py builds the
pack) and in `fleet policy` / `fleet diff` (fleet/policy.py feeds them the mocked program's resources).
Props are the provider inputs in camelCase. A value that is unknown during preview (the image digest
before the build) is "can't tell yet", never a violation. Each message names the resource and the fix.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from components import names
from components.catalog import Region
from components.settings import GPU_MIN_CPU, GPU_MIN_MEMORY_GIB
from fleet.pricing import platform_shape, price_platform, price_services, service_shape
from fleet.program import ALERT_POLICY, CLOUD_RUN
from fleet.props import UNKNOWN, cpu_count, dig, known, memory_gib
from policy.balancer import check_balancer_ingress, check_public_entry
from policy.facts import StackFacts, facts_for
from policy.readiness import check_alert_notifications_except, check_alert_notifications_in, check_placeholders
from policy.rollout import check_rollout_bake, check_rollout_start, check_traffic_split
from policy.security import (
    PUBLIC_MEMBERS,
    check_access_settings,
    check_account_project_roles,
    check_dedicated_accounts,
    check_no_secret_in_env,
    check_repository_access,
    iam_grants,
)

# The alert policies every Cloud Run service gets (contract with the monitoring component): one per kind,
# userLabels {service, region, alert, managed-by: yolo-fleet}.
ALERTS = ("error-ratio", "latency-p95", "max-instances")
INVOKER_ROLE = "roles/run.invoker"
# Cloud Run IAM resources that can grant the invoker role: type -> the input naming the service.
INVOKER_GRANTS = {
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": "name",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding": "name",
    "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy": "name",
    "gcp:cloudrun/iamMember:IamMember": "service",
    "gcp:cloudrun/iamBinding:IamBinding": "service",
    "gcp:cloudrun/iamPolicy:IamPolicy": "service",
}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
GPU_LIMIT = "nvidia.com/gpu"

Options = Mapping[str, Any]


def _int(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _where(name: str, props: Any) -> str:
    region = dig(props, "location")
    return f"{name} ({region})" if isinstance(region, str) else name


def _region(facts: StackFacts, region_id: Any) -> Region | None:
    return next((region for region in facts.catalog.regions if region.id == region_id), None)


def check_max_instances_cap(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    cap = facts.config.max_instances_cap
    if cap is None:
        return
    value = dig(props, "template", "scaling", "maxInstanceCount")
    fix = (f"lower max_instances where `fleet plan --stack {facts.stack} --explain <region>` says it is set (or "
           f"force it with yolo-fleet:forced_settings) or raise yolo-fleet:max_instances_cap in "
           f"Pulumi.{facts.stack}.yaml in a reviewed change")
    if value is None:
        yield f"{_where(name, props)}: max_instances is not set (Cloud Run allows 100), above the {facts.stack} " \
              f"stack's cap of {cap}; set max_instances"
    elif known(value) and value > cap:
        yield f"{_where(name, props)}: max_instances {_int(value)} is above the {facts.stack} stack's cap of " \
              f"{cap}; {fix}"


def check_min_within_max(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    low = dig(props, "template", "scaling", "minInstanceCount")
    high = dig(props, "template", "scaling", "maxInstanceCount")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        yield f"{_where(name, props)}: min_instances {_int(low)} is greater than max_instances {_int(high)}; " \
              "Cloud Run would refuse the revision. Lower min_instances or raise max_instances"


def check_region_in_catalog(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    location = dig(props, "location")
    if not isinstance(location, str):
        return
    region = _region(facts, location)
    if region is None:
        yield f"{name}: region {location} is not in the catalog; add it to regions.yaml (with its tier and " \
              "geography) or deploy to a catalog region (`fleet regions` lists them)"
    elif not region.enabled:
        yield f"{name}: region {location} is disabled in the catalog (enabled: false); enable it in regions.yaml " \
              "or remove the service"


def check_gpu_where_offered(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    limits = dig(props, "template", "containers", 0, "resources", "limits")
    accelerator = dig(props, "template", "nodeSelector", "accelerator")
    gpu = dig(limits, GPU_LIMIT) if isinstance(limits, Mapping) else None
    if not known(limits, accelerator) or (gpu is None and accelerator is None):
        return
    problems = []
    region = _region(facts, dig(props, "location"))
    if region is not None and not region.gpu_available:
        problems.append(f"{region.id} offers no GPU (gpu_available is false in regions.yaml); choose one of "
                        f"{', '.join(g.id for g in facts.catalog.regions if g.gpu_available)}")
    if accelerator != "nvidia-l4" or gpu is None:
        problems.append("a GPU needs both the nvidia.com/gpu limit and node selector accelerator nvidia-l4")
    cpu, memory = cpu_count(dig(limits, "cpu") or "1"), memory_gib(dig(limits, "memory") or "512Mi")
    if (cpu or 0) < GPU_MIN_CPU or (memory or 0) < GPU_MIN_MEMORY_GIB:
        problems.append(f"a GPU needs cpu >= {GPU_MIN_CPU} and memory >= {GPU_MIN_MEMORY_GIB}Gi "
                        f"(got cpu {dig(limits, 'cpu')}, memory {dig(limits, 'memory')})")
    if dig(props, "template", "containers", 0, "resources", "cpuIdle") is not False:
        problems.append("a GPU needs cpu_idle: false (instance-based billing)")
    for problem in problems:
        yield f"{_where(name, props)}: {problem}"


def check_image_pinned(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    containers = dig(props, "template", "containers")
    for i in range(len(containers) if isinstance(containers, Sequence) else 0):
        image = dig(containers, i, "image")
        if isinstance(image, str) and not DIGEST.search(image):
            yield f"{_where(name, props)}: container image '{image}' is not pinned by digest; deploy " \
                  "'<repository>@sha256:<digest>' (unset yolo-fleet:image to build, or give a digest)"


def _public_invoker(resource_type: str, props: Any) -> bool | None:
    """Does this resource let anyone invoke a Cloud Run service? None while unknown."""
    if resource_type == CLOUD_RUN:
        value = dig(props, "invokerIamDisabled")
        return None if value is UNKNOWN else value is True
    grants = iam_grants(resource_type, props)
    return None if grants is None else any(role == INVOKER_ROLE and member in PUBLIC_MEMBERS
                                           for role, member in grants)


def check_public_invoker(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    resource_type, name, props = r.resource_type, r.name, r.props
    service = dig(props, "name") if resource_type == CLOUD_RUN else dig(props, INVOKER_GRANTS[resource_type])
    if _public_invoker(resource_type, props) is not True or not isinstance(service, str):
        return
    settings = facts.settings_of(service)
    if settings is not None and settings.public:
        return
    how = ("invoker_iam_disabled is true" if resource_type == CLOUD_RUN
           else f"{INVOKER_ROLE} is granted to allUsers or allAuthenticatedUsers")
    reason = "is not a catalog service" if settings is None else "has public: false in the catalog and stack config"
    yield f"{name}: anyone can invoke Cloud Run service {service} ({how}) but {service} {reason}; set " \
          "`public: true` for it in regions.yaml or the stack settings if it is meant to be public, else remove " \
          "the public grant"


def check_required_labels(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    labels = dig(props, "labels")
    if labels is UNKNOWN:
        return
    missing = [key for key in options.get("labels", ()) if not dig(labels, key)]
    if missing:
        yield f"{_where(name, props)}: missing label(s) {', '.join(missing)}; declare services through " \
              "components/service.py, which sets them"
    expected = {"managed-by": "yolo-fleet", "stack": names.label_value(facts.stack), "region": dig(props, "location")}
    wrong = [f"{k}={dig(labels, k)!r} (expected {v!r})" for k, v in expected.items()
             if isinstance(dig(labels, k), str) and isinstance(v, str) and dig(labels, k) != v]
    if wrong:
        yield f"{_where(name, props)}: wrong label value(s) {', '.join(wrong)}"


def check_deletion_protection(r: Any, facts: StackFacts, options: Options) -> Iterator[str]:
    name, props = r.name, r.props
    if facts.stack in options.get("stacks", ()) and dig(props, "deletionProtection") is False:
        yield f"{_where(name, props)}: deletion protection is off in the {facts.stack} stack; set " \
              f"yolo-fleet:deletion_protection: true in Pulumi.{facts.stack}.yaml"


def check_alert_policies(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    """(message, urn) for every Cloud Run service without exactly one alert policy of each kind."""
    have: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in resources:
        if r.resource_type != ALERT_POLICY:
            continue
        labels = dig(r.props, "userLabels")
        if labels is UNKNOWN:
            return  # can't tell yet
        if dig(labels, "managed-by") == "yolo-fleet":
            have[(dig(labels, "service"), dig(labels, "region"))][dig(labels, "alert")] += 1
    for r in resources:
        if r.resource_type != CLOUD_RUN:
            continue
        service, region = dig(r.props, "name"), dig(r.props, "location")
        if not known(service, region):
            continue
        service = service or r.name
        counts = have[(service, region)]
        missing = [a for a in ALERTS if not counts[a]]
        doubled = [a for a in ALERTS if counts[a] > 1]
        if missing:
            yield (f"{service} ({region}) lacks alert policies: {', '.join(missing)}; every Cloud Run service needs "
                   "one of each, with userLabels service, region, alert, managed-by (the monitoring component "
                   "declares them)", r.urn)
        if doubled:
            yield f"{service} ({region}) has more than one {', '.join(doubled)} alert policy; keep exactly one", r.urn


def check_monthly_budget(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    budget = facts.config.monthly_budget_usd
    if budget is None:
        return
    services = [r for r in resources if r.resource_type == CLOUD_RUN]
    shapes = [service_shape(r.name, r.props) for r in services]
    if any(s is None for s in shapes):
        return  # a size or count is unknown until the update: can't tell yet
    regions = {r.id for r in facts.catalog.regions}  # other regions are region-in-catalog's to report
    costs = price_services([s for s in shapes if s and s.region in regions], facts.catalog, facts.prices)
    platform = price_platform(platform_shape((r.resource_type, r.name, r.props) for r in resources), facts.prices)
    total = sum(c.always_on for c in costs) + sum(p.always_on for p in platform)
    if total > budget:
        top = sorted([(c.shape.name, c.always_on) for c in costs if c.always_on]
                     + [(p.item, p.always_on) for p in platform if p.always_on], key=lambda t: -t[1])[:5]
        listed = ", ".join(f"{name} ${cost:,.2f}" for name, cost in top)
        yield (f"always-on cost ${total:,.2f}/month (min_instances kept warm, plus the load balancer's forwarding "
               f"rules and Cloud Armor policy, stored images and secret versions) is above the {facts.stack} "
               f"stack's budget of ${budget:,.2f} (yolo-fleet:monthly_budget_usd in Pulumi.{facts.stack}.yaml); "
               f"largest: {listed}. Lower min_instances or raise the budget in a reviewed change", "")


GPU_QUOTA = "Total Nvidia L4 GPU allocation, per project per region"
CLOUD_RUN_DEFAULT_MAX = 100  # what Cloud Run scales to when max_instances is unset


def check_gpu_quota(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    """Per region, the GPU services' max_instances (each instance holds its GPUs) fit the project's GPU quota."""
    quota = facts.config.gpu_quota_per_region
    by_region: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for r in resources:
        if r.resource_type != CLOUD_RUN:
            continue
        limits = dig(r.props, "template", "containers", 0, "resources", "limits")
        location, high = dig(r.props, "location"), dig(r.props, "template", "scaling", "maxInstanceCount")
        gpus = dig(limits, GPU_LIMIT) if isinstance(limits, Mapping) else None
        if not known(limits, location, high, gpus) or gpus is None or not isinstance(location, str):
            continue  # no GPU, or can't tell yet
        count = int(high) if isinstance(high, int | float) else CLOUD_RUN_DEFAULT_MAX
        by_region[location].append((r, count * int(float(str(gpus)))))
    for region, services in sorted(by_region.items()):
        total = sum(n for _, n in services)
        if total > quota:
            listed = ", ".join(f"{r.name} {n}" for r, n in services)
            gpus = f"{total} nvidia-l4 GPU{'s' if total != 1 else ''}"
            yield (f"{region}: the GPU services may scale to {gpus} ({listed}; max_instances x GPUs) "
                   f"but the project's Cloud Run GPU quota there is {quota} (yolo-fleet:gpu_quota_per_region in "
                   f"Pulumi.{facts.stack}.yaml, default 0: a project has none until requested). Request '{GPU_QUOTA}' "
                   f"(or its zonal-redundancy variant) for {region} in the console (IAM & Admin > Quotas) and set "
                   "yolo-fleet:gpu_quota_per_region to the granted amount, or lower max_instances", services[0][0].urn)


ResourceCheck = Callable[[Any, StackFacts, Options], Iterator[str]]
StackCheck = Callable[[list[Any], StackFacts, Options], Iterator[tuple[str, str]]]


def _options(schema: PolicyConfigSchema | None, args: ResourceValidationArgs | StackValidationArgs) -> Options:
    """Schema defaults under whatever config the engine (or `fleet policy`) passed."""
    defaults = {k: v["default"] for k, v in (schema.properties if schema else {}).items() if "default" in v}
    return {**defaults, **args.get_config()}


def _resource_policy(name: str, description: str, types: frozenset[str], check: ResourceCheck,
                     level: EnforcementLevel, schema: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type in types:
            for message in check(args, facts_for(args.urn), _options(schema, args)):
                report(message, None)  # about the resource validated

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=level, config_schema=schema)


def _stack_policy(name: str, description: str, check: StackCheck, level: EnforcementLevel,
                  schema: PolicyConfigSchema | None = None) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        if args.resources:
            facts = facts_for(args.resources[0].urn)
            for message, urn in check(args.resources, facts, _options(schema, args)):
                report(message, urn or None)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level,
                                 config_schema=schema)


SERVICES = frozenset({CLOUD_RUN})
MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource_policy("max-instances-cap", "Cloud Run max_instances stays within the stack's cap",
                     SERVICES, check_max_instances_cap, MANDATORY),
    _resource_policy("min-within-max", "Cloud Run min_instances is at most max_instances",
                     SERVICES, check_min_within_max, MANDATORY),
    _resource_policy("region-in-catalog", "Cloud Run services run only in enabled catalog regions",
                     SERVICES, check_region_in_catalog, MANDATORY),
    _resource_policy("gpu-where-offered", "GPUs only where the catalog offers them, with the CPU and memory they need",
                     SERVICES, check_gpu_where_offered, MANDATORY),
    _resource_policy("image-pinned-by-digest", "Cloud Run images are deployed by digest",
                     SERVICES, check_image_pinned, MANDATORY),
    _resource_policy("public-invoker-only-where-marked",
                     "No unauthenticated invoker unless the catalog marks the service public",
                     SERVICES | frozenset(INVOKER_GRANTS), check_public_invoker, MANDATORY),
    _resource_policy("required-labels", "Cloud Run services carry the fleet's labels", SERVICES,
                     check_required_labels, ADVISORY,
                     PolicyConfigSchema({"labels": {"type": "array", "items": {"type": "string"},
                                                    "default": ["managed-by", "stack", "region", "role"]}})),
    _resource_policy("deletion-protection-in-prod", "Deletion protection is on in production stacks", SERVICES,
                     check_deletion_protection, MANDATORY,
                     PolicyConfigSchema({"stacks": {"type": "array", "items": {"type": "string"},
                                                    "default": ["prod"]}})),
    _stack_policy("alert-policies", "Every Cloud Run service has its three alert policies",
                  check_alert_policies, MANDATORY),
    _stack_policy("monthly-budget", "Always-on cost stays within the stack's monthly budget",
                  check_monthly_budget, MANDATORY),
    _stack_policy("gpu-quota", "GPU services' max_instances per region fit the stack's GPU quota per region",
                  check_gpu_quota, MANDATORY),
    _stack_policy("dedicated-service-accounts",
                  "Every Cloud Run service runs as a declared account: its model's, or a shared region's own",
                  check_dedicated_accounts, MANDATORY),
    _stack_policy("service-account-project-roles",
                  "The fleet's service accounts hold only the allowed project roles (logs, metrics)",
                  check_account_project_roles, MANDATORY,
                  PolicyConfigSchema({"allowedProjectRoles": {
                      "type": "array", "items": {"type": "string"},
                      "default": ["roles/logging.logWriter", "roles/monitoring.metricWriter"]}})),
    _resource_policy("no-secrets-in-plain-env", "No plain environment variable carries a secret",
                     SERVICES, check_no_secret_in_env, MANDATORY),
    _resource_policy("access-settings-explicit",
                     "Ingress and the invoker check are set explicitly, ingress as the settings resolve it",
                     SERVICES, check_access_settings, MANDATORY),
    _stack_policy("artifact-registry-access",
                  "Artifact Registry repositories: no public access, read-only for identities that pull",
                  check_repository_access, MANDATORY),
    _stack_policy("public-entry-tls-and-armor",
                  "A public host only with TLS 1.2+ on its HTTPS proxy and a Cloud Armor policy on its backend",
                  check_public_entry, MANDATORY),
    _stack_policy("balancer-ingress",
                  "Cloud Run services behind the balancer let it in (ingress all or internal-and-cloud-load-balancing)",
                  check_balancer_ingress, MANDATORY),
    _stack_policy("no-placeholders",
                  "Nothing from the examples is deployed: placeholder project, key digests, example.com domains, "
                  "example tenants", check_placeholders, MANDATORY,
                  PolicyConfigSchema({"exampleTenants": {"type": "array", "items": {"type": "string"},
                                                         "default": ["acme", "globex", "initech"]}})),
    _stack_policy("alert-notifications-in-prod", "Alert policies notify someone in production stacks",
                  check_alert_notifications_in, MANDATORY,
                  PolicyConfigSchema({"stacks": {"type": "array", "items": {"type": "string"}, "default": ["prod"]}})),
    _resource_policy("traffic-split", "A traffic split sums to 100 and names the revisions the plan creates or keeps",
                     SERVICES, check_traffic_split, MANDATORY),
    _stack_policy("rollout-starts-in-canary", "A rollout below 100% of its wave's traffic runs in one region",
                  check_rollout_start, MANDATORY),
    _stack_policy("rollout-bake", "Each rollout wave bakes long enough before it is judged (production stacks)",
                  check_rollout_bake, MANDATORY,
                  PolicyConfigSchema({"stacks": {"type": "array", "items": {"type": "string"}, "default": ["prod"]},
                                      "minBakeMinutes": {"type": "number", "default": 5}})),
    _stack_policy("alert-notifications", "Alert policies notify someone (other stacks: a warning)",
                  check_alert_notifications_except, ADVISORY,
                  PolicyConfigSchema({"exceptStacks": {"type": "array", "items": {"type": "string"},
                                                       "default": ["prod"]}})),
]
