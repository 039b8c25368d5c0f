"""The fleet's global external Application Load Balancer: one address for the shared API and, with `domain`
set, a URL per model and per dedicated endpoint.

Shared API: `us.<shared domain>`, `eu.`, `ap.` reach one shared region each; on the shared domain itself a
path rule per tenant sends `/api/models/<owner>/*` to the region that holds the owner's models.
Dedicated (`yolo-fleet:domain`): `<model>.<domain>` reaches a backend service whose serverless NEGs are the
model's endpoints in every region, so each client is served by the nearest region with capacity and
outlier detection ejects a region that answers with consecutive 5xx (its traffic moves to the next
nearest); `<endpoint>.<domain>` reaches that endpoint alone. Every backend has the stack's Cloud Armor
policy (a per-client rate limit), the HTTPS proxy an SSL policy (TLS 1.2+), and plain HTTP redirects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import compute

from components import names
from components.errors import FleetError
from components.layout import FleetLayout, ServicePlan
from components.monitoring import MonitoringInputs, declare_host_alert
from components.stack_config import RateLimitSpec, StackConfig, TlsSpec

# Host label of each geography's shared region: us.<domain>, eu.<domain>, ap.<domain>.
HOST_PREFIX = {"americas": "us", "europe": "eu", "asia-pacific": "ap", "middle-east": "me", "africa": "af"}
TENANT_MATCHER = "tenants"
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123: 1-63, no '-' at either end
MAX_CERT_DOMAINS = 100  # a Google-managed SSL certificate holds at most 100 names
MAX_PROXY_CERTS = 15  # certificates one target HTTPS proxy may carry
# Outlier detection on a model's backend service: a region answering 5 consecutive 5xx is ejected for 30 s
# (longer each time again), at most half the regions at once, so the rest always take its traffic.
EJECT_AFTER_ERRORS, EJECT_INTERVAL_S, EJECT_BASE_S, EJECT_MAX_PERCENT = 5, 10, 30, 50
RATE_RULE_PRIORITY, DEFAULT_RULE_PRIORITY = 1000, 2147483647  # the default rule is always the lowest priority


@dataclass(frozen=True)
class SharedRoutes:
    """Pure data, checked before anything is declared: hosts by region, and each tenant's data region."""

    domain: str
    hosts: dict[str, str]  # region id -> host name
    tenants: dict[str, str]  # owner -> data region id

    def url(self, region_id: str) -> str:
        return f"https://{self.hosts[region_id]}"


@dataclass(frozen=True)
class ModelHosts:
    """A model's host and its endpoints' hosts (endpoint name -> host, in catalog order)."""

    model: str
    host: str
    endpoints: dict[str, str]


@dataclass(frozen=True)
class BalancerRoutes:
    """Every host the balancer serves, checked: the shared API's (if any) and, with `domain`, the dedicated."""

    shared: SharedRoutes | None
    domain: str | None
    models: list[ModelHosts] = field(default_factory=list)

    def certificate_groups(self) -> list[tuple[str | None, int, list[str]]]:
        """(model, or None for the shared hosts; chunk; domains) per managed certificate: one group per model (its
        host and its endpoints'), one for the shared hosts, each split into certificates of at most 100 names. A
        model's certificate changes only when its own regions do."""
        groups: list[tuple[str | None, list[str]]] = [(m.model, [m.host, *m.endpoints.values()]) for m in self.models]
        if self.shared:
            groups.append((None, [self.shared.domain, *self.shared.hosts.values()]))
        return [(owner, i // MAX_CERT_DOMAINS, hosts[i:i + MAX_CERT_DOMAINS])
                for owner, hosts in groups for i in range(0, len(hosts), MAX_CERT_DOMAINS)]


def plan_routes(config: StackConfig, shared: list[ServicePlan], source: str) -> SharedRoutes | None:
    """The shared API's hosts and tenant regions; FleetError names the tenant or region at fault. The hosts are
    under `shared_domain`, or under `domain` when only that is set (one balancer, one domain)."""
    if not shared:
        return None
    domain = config.shared_domain or config.domain
    if domain is None:
        raise FleetError(f"{source}: shared_domain is required: the shared services are only reachable through "
                         "the load balancer, on this domain (e.g. 'inference.example.com'); or set domain, and "
                         "the shared hosts go under it")
    gen1 = [p.region.id for p in shared if p.settings.execution_environment != "gen2"]
    if gen1:
        raise FleetError(f"{source}: shared in regions[{gen1[0]}]: execution_environment: the shared services "
                         "mount their model bucket, which Cloud Run supports only on gen2")
    prefixes = {p.region.id: HOST_PREFIX[p.region.geography] for p in shared}
    clash = sorted({p for p in prefixes.values() if list(prefixes.values()).count(p) > 1})
    if clash:
        raise FleetError(f"{source}: two shared regions in one geography would both be {clash[0]}."
                         f"{domain}; keep one shared region per geography in the catalog")
    allowed = ", ".join(prefixes)
    for owner, tenant in config.tenants.items():
        if tenant.data_region not in prefixes:
            raise FleetError(f"{source}: tenants.{owner}.data_region: '{tenant.data_region}' is not a shared "
                             f"region; choose one of {allowed}")
    return SharedRoutes(domain, {rid: f"{p}.{domain}" for rid, p in prefixes.items()},
                        {owner: t.data_region for owner, t in config.tenants.items()})


def _host(label: str, domain: str, where: str, source: str) -> str:
    """`<label>.<domain>`; a domain of at most 200 characters and a label of at most 63 keep it within DNS's 253."""
    host = f"{label}.{domain}"
    if not DNS_LABEL.fullmatch(label):
        raise FleetError(f"{source}: {where}: host '{host}': '{label}' is not a DNS label (1-63 lowercase letters, "
                         "digits and '-', not at either end); rename the model or the region's city")
    return host


def _first_clash(owners: list[tuple[str, str]]) -> tuple[str, str, str] | None:
    """(value, first owner, second owner) of the first value two owners share, else None."""
    seen: dict[str, str] = {}
    for value, owner in owners:
        if value in seen and seen[value] != owner:
            return value, seen[value], owner
        seen.setdefault(value, owner)
    return None


def plan_balancer(config: StackConfig, layout: FleetLayout, source: str, stack: str) -> BalancerRoutes | None:
    """Every host of the balancer, or None when nothing needs one (no shared API, no `domain`). FleetError on a
    host that is not a DNS name, two things on one host (naming both), or more certificates than a proxy takes."""
    shared = plan_routes(config, layout.shared, source)
    if config.domain is None:
        return BalancerRoutes(shared, None) if shared else None
    if not layout.endpoints and not shared:
        return None
    unreachable = next((p for p in layout.services if p.settings.ingress == "internal"), None)
    if unreachable:
        raise FleetError(f"{source}: {unreachable.name} in regions[{unreachable.region.id}]: ingress: 'internal' "
                         "refuses the load balancer's traffic, so its host would never answer; use "
                         "'internal-and-cloud-load-balancing' (balancer only) or 'all' (its run.app URL too)")
    models: dict[str, ModelHosts] = {}
    for plan in layout.endpoints:
        assert plan.model is not None
        name = plan.model.name
        if name not in models:
            models[name] = ModelHosts(name, _host(name, config.domain, f"models[{name}]", source), {})
        models[name].endpoints[plan.name] = _host(plan.name, config.domain,
                                                  f"models[{name}] in regions[{plan.region.id}]", source)
    routes = BalancerRoutes(shared, config.domain, list(models.values()))
    owners = ([(shared.domain, "the shared API's tenant host")] if shared else []) + [
        (host, f"the shared API's host for {rid}") for rid, host in (shared.hosts.items() if shared else ())]
    for m in routes.models:
        owners.append((m.host, f"model {m.model}"))
        owners += [(host, f"endpoint {endpoint}") for endpoint, host in m.endpoints.items()]
    clash = _first_clash(owners)
    if clash:
        host, first, second = clash
        shared_api = shared is not None and (host == shared.domain or host in shared.hosts.values())
        fix = "rename the model, or give the shared API its own shared_domain" if shared_api else "rename the model"
        raise FleetError(f"{source}: host {host} would serve both {first} and {second}; {fix}")
    backends = [(names.compute_name(stack, p.name), f"the shared service {p.name}") for p in layout.shared]
    for m in routes.models:
        backends.append((names.model_backend(stack, m.model), f"model {m.model}'s backend"))
        backends += [(names.compute_name(stack, e), f"endpoint {e}'s backend") for e in m.endpoints]
    clash = _first_clash(backends)
    if clash:
        name, first, second = clash
        raise FleetError(f"{source}: {first} and {second} would both be backend service {name}; rename the model")
    certificates = len(routes.certificate_groups())
    if certificates > MAX_PROXY_CERTS:
        raise FleetError(f"{source}: domain: the balancer would need {certificates} managed certificates (one per "
                         f"model, at most {MAX_CERT_DOMAINS} names each, and one for the shared API) but an HTTPS "
                         f"proxy takes at most {MAX_PROXY_CERTS}; serve fewer models under domain")
    return routes


@dataclass(frozen=True)
class BalancerArgs:
    project: str
    stack: str
    routes: BalancerRoutes
    tls: TlsSpec
    rate_limit: RateLimitSpec
    shared: dict[str, tuple[ServicePlan, pulumi.Input[str]]]  # region id -> (plan, Cloud Run service name)
    endpoints: dict[str, tuple[ServicePlan, pulumi.Input[str]]]  # endpoint name -> (plan, service name)
    monitoring: MonitoringInputs  # where the model hosts' error-ratio alerts go


def security_policy_rules(limit: RateLimitSpec) -> list[compute.SecurityPolicyRuleArgs]:
    """A per-client-IP rate limit on every request, then the default rule (allow) every policy must end with."""
    threshold = compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
        count=limit.requests, interval_sec=limit.interval_seconds)
    ban = limit.action == "ban"
    return [
        compute.SecurityPolicyRuleArgs(
            priority=RATE_RULE_PRIORITY, action="rate_based_ban" if ban else "throttle", preview=limit.preview,
            description=f"at most {limit.requests} requests per {limit.interval_seconds} s per client IP",
            match=compute.SecurityPolicyRuleMatchArgs(
                versioned_expr="SRC_IPS_V1", config=compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"])),
            rate_limit_options=compute.SecurityPolicyRuleRateLimitOptionsArgs(
                conform_action="allow", exceed_action="deny(429)", enforce_on_key="IP",
                rate_limit_threshold=threshold, ban_duration_sec=limit.ban_seconds if ban else None,
                ban_threshold=compute.SecurityPolicyRuleRateLimitOptionsBanThresholdArgs(
                    count=limit.requests, interval_sec=limit.interval_seconds) if ban else None)),
        compute.SecurityPolicyRuleArgs(
            priority=DEFAULT_RULE_PRIORITY, action="allow", description="default rule: everything else",
            match=compute.SecurityPolicyRuleMatchArgs(
                versioned_expr="SRC_IPS_V1", config=compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"]))),
    ]


class LoadBalancer(pulumi.ComponentResource):
    """Outputs `ip_address` (point every host's DNS A record here), `shared_hosts` (region id -> host, 'apex'),
    `model_urls` and `endpoint_urls`."""

    ip_address: pulumi.Output[str]
    shared_hosts: dict[str, str]
    model_urls: dict[str, str]
    endpoint_urls: dict[str, str]

    def __init__(self, name: str, args: BalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Was the shared API's own balancer: the aliases keep its resources in place.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            aliases=[pulumi.Alias(name="shared-lb", type_="yolo-fleet:index:SharedRouting")]))
        super().__init__("yolo-fleet:index:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        project, stack, routes = args.project, args.stack, args.routes
        armor = compute.SecurityPolicy(
            f"{name}-armor", name=names.compute_name(stack, "armor"), project=project, type="CLOUD_ARMOR",
            description="per-client rate limit on every backend of the fleet's balancer",
            rules=security_policy_rules(args.rate_limit), opts=child)

        def negs(plans: list[tuple[ServicePlan, pulumi.Input[str]]]) -> list[compute.RegionNetworkEndpointGroup]:
            return [compute.RegionNetworkEndpointGroup(
                plan.name, name=names.compute_name(stack, plan.name), project=project, region=plan.region.id,
                network_endpoint_type="SERVERLESS",
                cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=service), opts=child)
                for plan, service in plans]

        def backend(logical: str, physical: str, groups: list[compute.RegionNetworkEndpointGroup], description: str,
                    outlier: bool = False) -> pulumi.Output[str]:
            return compute.BackendService(
                logical, name=physical, project=project, description=description,
                load_balancing_scheme="EXTERNAL_MANAGED", protocol="HTTPS",
                backends=[compute.BackendServiceBackendArgs(group=g.id) for g in groups],
                security_policy=armor.id,
                outlier_detection=compute.BackendServiceOutlierDetectionArgs(
                    consecutive_errors=EJECT_AFTER_ERRORS, enforcing_consecutive_errors=100,
                    interval=compute.BackendServiceOutlierDetectionIntervalArgs(seconds=EJECT_INTERVAL_S),
                    base_ejection_time=compute.BackendServiceOutlierDetectionBaseEjectionTimeArgs(
                        seconds=EJECT_BASE_S),
                    max_ejection_percent=EJECT_MAX_PERCENT) if outlier else None,
                log_config=compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0), opts=child).id

        host_rules: list[compute.URLMapHostRuleArgs] = []
        matchers: list[compute.URLMapPathMatcherArgs] = []
        default: pulumi.Output[str] | None = None
        if routes.shared:
            shared = routes.shared
            backends = {rid: backend(plan.name, names.compute_name(stack, plan.name), negs([(plan, service)]),
                                     f"shared inference in {rid}")
                        for rid, (plan, service) in args.shared.items()}
            default = backends[next(iter(args.shared))]
            host_rules += [compute.URLMapHostRuleArgs(hosts=[host], path_matcher=rid)
                           for rid, host in shared.hosts.items()]
            host_rules.append(compute.URLMapHostRuleArgs(hosts=[shared.domain], path_matcher=TENANT_MATCHER))
            matchers += [compute.URLMapPathMatcherArgs(name=rid, default_service=backends[rid]) for rid in shared.hosts]
            matchers.append(compute.URLMapPathMatcherArgs(
                name=TENANT_MATCHER, default_service=default,
                path_rules=[compute.URLMapPathMatcherPathRuleArgs(paths=[f"/api/models/{owner}/*"],
                                                                  service=backends[region])
                            for owner, region in sorted(shared.tenants.items())] or None))
        self.model_urls = {}
        self.endpoint_urls = {}
        lb_name, http_name = names.compute_name(stack), names.compute_name(stack, "http")
        for m in routes.models:
            plans = [args.endpoints[e][0] for e in m.endpoints]
            groups = negs([args.endpoints[e] for e in m.endpoints])
            for (endpoint, host), group in zip(m.endpoints.items(), groups, strict=True):
                service = backend(endpoint, names.compute_name(stack, endpoint), [group],
                                  f"endpoint {endpoint} alone ({host})")
                host_rules.append(compute.URLMapHostRuleArgs(hosts=[host], path_matcher=f"e-{endpoint}"))
                matchers.append(compute.URLMapPathMatcherArgs(name=f"e-{endpoint}", default_service=service))
                self.endpoint_urls[endpoint] = f"https://{host}"
            service = backend(f"model-{m.model}", names.model_backend(stack, m.model), groups,
                              f"model {m.model}: the nearest healthy of its {len(groups)} region(s)", outlier=True)
            # The strictest of its endpoints' thresholds: what a client of the host sees is what matters.
            declare_host_alert(m.model, m.host, lb_name, names.model_backend(stack, m.model),
                               min(p.settings.alert_error_ratio for p in plans),
                               min(p.settings.alert_duration_seconds for p in plans), args.monitoring, self)
            host_rules.append(compute.URLMapHostRuleArgs(hosts=[m.host], path_matcher=f"m-{m.model}"))
            matchers.append(compute.URLMapPathMatcherArgs(name=f"m-{m.model}", default_service=service))
            self.model_urls[m.model] = f"https://{m.host}"
            default = default or service
        url_map = compute.URLMap(
            name, name=lb_name, project=project,
            description="hosts: the shared API per region and its tenants; a host per model and per endpoint",
            default_service=default, host_rules=host_rules, path_matchers=matchers, opts=child)
        # The shared hosts' certificate keeps the logical name it had on the shared API's own balancer (the
        # component's aliases carry it over): renamed, it would be replaced under the same physical name.
        certificates = [compute.ManagedSslCertificate(
            (name if owner is None else f"{name}-cert-{owner}") + (f".{chunk}" if chunk else ""),
            name=names.certificate_name(stack, domains), project=project, type="MANAGED",
            managed=compute.ManagedSslCertificateManagedArgs(domains=domains), opts=child).id
            for owner, chunk, domains in routes.certificate_groups()]
        tls = compute.SSLPolicy(f"{name}-tls", name=names.compute_name(stack, "tls"), project=project,
                                profile=args.tls.profile, min_tls_version=args.tls.min_tls_version, opts=child)
        address = compute.GlobalAddress(name, name=lb_name, project=project, address_type="EXTERNAL",
                                        ip_version="IPV4", opts=child)
        https_proxy = compute.TargetHttpsProxy(name, name=lb_name, project=project, url_map=url_map.id,
                                               ssl_certificates=certificates, ssl_policy=tls.id, opts=child)
        compute.GlobalForwardingRule(
            name, name=names.compute_name(stack, "https"), project=project, target=https_proxy.id,
            ip_address=address.address, ip_protocol="TCP", port_range="443", load_balancing_scheme="EXTERNAL_MANAGED",
            opts=child)
        # Plain HTTP on the same address answers with a redirect to HTTPS, never with content.
        redirect = compute.URLMap(
            f"{name}-http", name=http_name, project=project,
            default_url_redirect=compute.URLMapDefaultUrlRedirectArgs(
                https_redirect=True, strip_query=False, redirect_response_code="MOVED_PERMANENTLY_DEFAULT"),
            opts=child)
        http_proxy = compute.TargetHttpProxy(f"{name}-http", name=http_name, project=project,
                                             url_map=redirect.id, opts=child)
        compute.GlobalForwardingRule(
            f"{name}-http", name=http_name, project=project, target=http_proxy.id,
            ip_address=address.address, ip_protocol="TCP", port_range="80",
            load_balancing_scheme="EXTERNAL_MANAGED", opts=child)
        self.ip_address = address.address
        self.shared_hosts = {"apex": routes.shared.domain, **routes.shared.hosts} if routes.shared else {}
        self.register_outputs({"ip_address": self.ip_address, "shared_hosts": self.shared_hosts,
                               "model_urls": self.model_urls, "endpoint_urls": self.endpoint_urls})
