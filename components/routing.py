"""The shared API's global HTTPS load balancer: one domain, a host per region, tenants to their data region.

`us.<domain>`, `eu.<domain>`, `ap.<domain>` reach one shared region each; on the apex domain a path rule
per tenant sends `/api/models/<owner>/*` to the region that holds the owner's models, so a tenant's
requests are served where its data lives. The shared services accept traffic only from the balancer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from components import names
from components.errors import FleetError
from components.layout import ServicePlan
from components.stack_config import StackConfig

# Host label of each geography's shared region: us.<domain>, eu.<domain>, ap.<domain>.
HOST_PREFIX = {"americas": "us", "europe": "eu", "asia-pacific": "ap", "middle-east": "me", "africa": "af"}
TENANT_MATCHER = "tenants"


@dataclass(frozen=True)
class SharedRoutes:
    """Pure data, checked before anything is declared: hosts by region, and each tenant's data region."""

    domain: str
    hosts: dict[str, str]  # region id -> host name
    tenants: dict[str, str]  # owner -> data region id

    def url(self, region_id: str) -> str:
        return f"https://{self.hosts[region_id]}"


def plan_routes(config: StackConfig, shared: list[ServicePlan], source: str) -> SharedRoutes | None:
    """Hosts and tenant regions for the balancer; FleetError names the tenant or region at fault."""
    if not shared:
        return None
    if config.shared_domain is None:
        raise FleetError(f"{source}: shared_domain is required: the shared services are only reachable through "
                         "the load balancer, on this domain (e.g. 'inference.example.com')")
    gen1 = [p.region.id for p in shared if p.settings.execution_environment != "gen2"]
    if gen1:
        raise FleetError(f"{source}: shared in regions[{gen1[0]}]: execution_environment: the shared services "
                         "mount their model bucket, which Cloud Run supports only on gen2")
    prefixes = {p.region.id: HOST_PREFIX[p.region.geography] for p in shared}
    clash = sorted({p for p in prefixes.values() if list(prefixes.values()).count(p) > 1})
    if clash:
        raise FleetError(f"{source}: two shared regions in one geography would both be {clash[0]}."
                         f"{config.shared_domain}; keep one shared region per geography in the catalog")
    allowed = ", ".join(prefixes)
    for owner, tenant in config.tenants.items():
        if tenant.data_region not in prefixes:
            raise FleetError(f"{source}: tenants.{owner}.data_region: '{tenant.data_region}' is not a shared "
                             f"region; choose one of {allowed}")
    return SharedRoutes(config.shared_domain, {rid: f"{p}.{config.shared_domain}" for rid, p in prefixes.items()},
                        {owner: t.data_region for owner, t in config.tenants.items()})


@dataclass(frozen=True)
class SharedRoutingArgs:
    project: str
    stack: str
    routes: SharedRoutes
    services: dict[str, tuple[ServicePlan, pulumi.Input[str]]]  # region id -> (plan, Cloud Run service name)


class SharedRouting(pulumi.ComponentResource):
    """Outputs `ip_address` (point the DNS A records of every host here) and `hosts` (region id -> host)."""

    ip_address: pulumi.Output[str]
    hosts: dict[str, str]

    def __init__(self, name: str, args: SharedRoutingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:SharedRouting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = args.stack
        lb_name, http_name = names.compute_name(stack), names.compute_name(stack, "http")
        backends: dict[str, pulumi.Output[str]] = {}
        for rid, (plan, service_name) in args.services.items():
            neg = compute.RegionNetworkEndpointGroup(
                plan.name, name=names.compute_name(stack, plan.name), project=args.project, region=rid,
                network_endpoint_type="SERVERLESS",
                cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=service_name), opts=child)
            backend = compute.BackendService(
                plan.name, name=names.compute_name(stack, plan.name), project=args.project,
                load_balancing_scheme="EXTERNAL_MANAGED", protocol="HTTPS",
                backends=[compute.BackendServiceBackendArgs(group=neg.id)],
                log_config=compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0), opts=child)
            backends[rid] = backend.id
        routes = args.routes
        home = backends[next(iter(args.services))]
        url_map = compute.URLMap(
            name, name=lb_name, project=args.project,
            description=f"shared inference: hosts per region, tenants on {routes.domain} to their data region",
            default_service=home,
            host_rules=[compute.URLMapHostRuleArgs(hosts=[host], path_matcher=rid)
                        for rid, host in routes.hosts.items()]
            + [compute.URLMapHostRuleArgs(hosts=[routes.domain], path_matcher=TENANT_MATCHER)],
            path_matchers=[compute.URLMapPathMatcherArgs(name=rid, default_service=backends[rid])
                           for rid in routes.hosts]
            + [compute.URLMapPathMatcherArgs(
                name=TENANT_MATCHER, default_service=home,
                path_rules=[compute.URLMapPathMatcherPathRuleArgs(paths=[f"/api/models/{owner}/*"],
                                                                  service=backends[region])
                            for owner, region in sorted(routes.tenants.items())] or None)],
            opts=child)
        # Named after its domains: adding a host replaces the certificate under a new name, so the new one can
        # exist before the old one goes.
        domains = [routes.domain, *routes.hosts.values()]
        certificate = compute.ManagedSslCertificate(
            name, name=names.compute_name(stack, "cert", names.short_hash(",".join(domains))), project=args.project,
            type="MANAGED", managed=compute.ManagedSslCertificateManagedArgs(domains=domains), opts=child)
        address = compute.GlobalAddress(name, name=lb_name, project=args.project, address_type="EXTERNAL",
                                        ip_version="IPV4", opts=child)
        https_proxy = compute.TargetHttpsProxy(name, name=lb_name, project=args.project, url_map=url_map.id,
                                               ssl_certificates=[certificate.id], opts=child)
        compute.GlobalForwardingRule(
            name, name=names.compute_name(stack, "https"), project=args.project, target=https_proxy.id,
            ip_address=address.address, ip_protocol="TCP", port_range="443", load_balancing_scheme="EXTERNAL_MANAGED",
            opts=child)
        # Plain HTTP on the same address answers with a redirect to HTTPS, never with content.
        redirect = compute.URLMap(
            f"{name}-http", name=http_name, project=args.project,
            default_url_redirect=compute.URLMapDefaultUrlRedirectArgs(
                https_redirect=True, strip_query=False, redirect_response_code="MOVED_PERMANENTLY_DEFAULT"),
            opts=child)
        http_proxy = compute.TargetHttpProxy(f"{name}-http", name=http_name, project=args.project,
                                             url_map=redirect.id, opts=child)
        compute.GlobalForwardingRule(
            f"{name}-http", name=http_name, project=args.project, target=http_proxy.id,
            ip_address=address.address, ip_protocol="TCP", port_range="80",
            load_balancing_scheme="EXTERNAL_MANAGED", opts=child)
        self.ip_address = address.address
        self.hosts = {"apex": routes.domain, **routes.hosts}
        self.register_outputs({"ip_address": self.ip_address, "hosts": self.hosts})
