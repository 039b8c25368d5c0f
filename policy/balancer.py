"""The pack's rules for the public entry: every HTTPS proxy with an SSL policy of TLS 1.2 or newer, every
internet-facing backend service behind a Cloud Armor security policy, and every Cloud Run service behind
the balancer letting the balancer's traffic in (`all` or `internal-and-cloud-load-balancing`).

Values unknown during a real preview (a new policy's id) are "can't tell yet", as everywhere in the pack.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fleet.program import CLOUD_RUN
from fleet.props import UNKNOWN, dig
from policy.facts import StackFacts

HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
SSL_POLICY = "gcp:compute/sSLPolicy:SSLPolicy"
BACKEND_SERVICE = "gcp:compute/backendService:BackendService"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
STRONG_TLS = frozenset({"TLS_1_2", "TLS_1_3"})
STRONG_PROFILES = frozenset({"MODERN", "RESTRICTED"})
PUBLIC_SCHEMES = frozenset({"EXTERNAL", "EXTERNAL_MANAGED"})
# Ingress values that let a global external balancer's traffic reach a Cloud Run service.
BALANCER_INGRESS = frozenset({"INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"})
FIX = "declare the balancer through components/routing.py, which sets it"


def check_public_entry(resources: list[Any], facts: StackFacts,
                       options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A public host only with TLS 1.2+ (an SSL policy on its proxy) and a security policy on its backend."""
    for r in resources:
        props = r.props
        if r.resource_type == HTTPS_PROXY and dig(props, "sslPolicy") is None:
            yield (f"{r.name}: HTTPS proxy without an SSL policy, so Google's default accepts TLS 1.0 and 1.1; attach "
                   f"one with min_tls_version TLS_1_2 and profile MODERN or RESTRICTED ({FIX})", r.urn)
        elif r.resource_type == SSL_POLICY:
            version, profile = dig(props, "minTlsVersion"), dig(props, "profile")
            if UNKNOWN in (version, profile):
                continue
            if version not in STRONG_TLS or profile not in STRONG_PROFILES:
                yield (f"{r.name}: SSL policy allows {version or 'TLS_1_0 (the default)'} with profile "
                       f"{profile or 'COMPATIBLE (the default)'}; the fleet's hosts need TLS_1_2 or TLS_1_3 and "
                       "MODERN or RESTRICTED (yolo-fleet:tls)", r.urn)
        elif (r.resource_type == BACKEND_SERVICE and dig(props, "loadBalancingScheme") in PUBLIC_SCHEMES
              and dig(props, "securityPolicy") is None):
            yield (f"{r.name}: internet-facing backend service without a Cloud Armor security policy, so nothing "
                   f"limits how fast one client may call it; attach the stack's rate-limit policy ({FIX})", r.urn)


def check_balancer_ingress(resources: list[Any], facts: StackFacts,
                           options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A Cloud Run service behind a serverless NEG must let the balancer in, or its host never answers."""
    behind = {dig(r.props, "cloudRun", "service") for r in resources if r.resource_type == NEG}
    for r in resources:
        if r.resource_type != CLOUD_RUN or dig(r.props, "name") not in behind:
            continue
        ingress = dig(r.props, "ingress")
        if ingress is not None and ingress is not UNKNOWN and ingress not in BALANCER_INGRESS:  # unset: all
            yield (f"{r.name}: behind the load balancer but ingress is {ingress}, which refuses the balancer's "
                   "traffic; set `ingress: internal-and-cloud-load-balancing` (balancer only) or `all` (its run.app "
                   "URL too) in regions.yaml or the stack's settings", r.urn)
