"""The shared API's load balancer under mocks: each host reaches its region, each tenant its data region."""

from __future__ import annotations

import functools
import json
import re

import pytest

from components.errors import FleetError
from fleet.cli import main
from fleet.mocks import resource_id
from fleet.program import Plan, evaluate
from tests.conftest import prod_in

DOMAIN = "inference.example.com"
URL_MAP = "gcp:compute/uRLMap:URLMap"
HOME = ("us-central1", "shared-iowa-prod")


def one(plan: Plan, type_token: str, **match: object) -> dict:
    found = [r.inputs for r in plan.custom(type_token) if all(r.inputs.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (type_token, match, len(found))
    return found[0]


def backend_target(plan: Plan, backend_id: str) -> tuple[str, str]:
    """A backend service id -> (region, Cloud Run service) of the serverless NEG behind it."""
    backend = next(r.inputs for r in plan.custom("gcp:compute/backendService:BackendService")
                   if resource_id(r.name) == backend_id)
    assert backend["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    [group] = [b["group"] for b in backend["backends"]]
    neg = next(r.inputs for r in plan.custom("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup")
               if resource_id(r.name) == group)
    assert neg["networkEndpointType"] == "SERVERLESS"
    return neg["region"], neg["cloudRun"]["service"]


def routes(plan: Plan) -> dict[tuple[str, str], tuple[str, str]]:
    """(host, path or '*') -> (region, service), read from the declared URL map."""
    url_map = one(plan, URL_MAP, name="yolo-fleet-prod" if plan.stack == "prod" else "yolo-fleet-dev")
    matchers = {m["name"]: m for m in url_map["pathMatchers"]}
    out = {}
    for rule in url_map["hostRules"]:
        matcher = matchers[rule["pathMatcher"]]
        for host in rule["hosts"]:
            out[(host, "*")] = backend_target(plan, matcher["defaultService"])
            for path_rule in matcher.get("pathRules", []):
                for path in path_rule["paths"]:
                    out[(host, path)] = backend_target(plan, path_rule["service"])
    assert backend_target(plan, url_map["defaultService"]) == HOME
    return out


def test_each_region_host_reaches_its_own_region(prod_plan):
    r = routes(prod_plan)
    assert r[(f"us.{DOMAIN}", "*")] == ("us-central1", "shared-iowa-prod")
    assert r[(f"eu.{DOMAIN}", "*")] == ("europe-west1", "shared-st-ghislain-prod")
    assert r[(f"ap.{DOMAIN}", "*")] == ("asia-east1", "shared-changhua-county-prod")
    assert {k for k in r if k[0] != DOMAIN} == {(f"{p}.{DOMAIN}", "*") for p in ("us", "eu", "ap")}


def test_each_tenant_is_routed_to_its_data_region(prod_plan):
    tenants = {path: target for (host, path), target in routes(prod_plan).items() if host == DOMAIN}
    assert tenants == {
        "/api/models/acme/*": ("us-central1", "shared-iowa-prod"),
        "/api/models/globex/*": ("europe-west1", "shared-st-ghislain-prod"),
        "/api/models/initech/*": ("asia-east1", "shared-changhua-county-prod"),
        "*": HOME,
    }


def test_moving_a_tenant_moves_only_its_path_rule():
    tenants = {"acme": {"data_region": "asia-east1", "key_sha256": ["1" * 64]},
               "globex": {"data_region": "europe-west1", "key_sha256": ["2" * 64]},
               "initech": {"data_region": "asia-east1", "key_sha256": ["3" * 64]},
               "new-co": {"data_region": "us-central1", "key_sha256": ["4" * 64]}}
    before = routes(evaluate("prod", config_overrides=prod_in()))
    after = routes(evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:tenants": json.dumps(tenants)}))
    assert after[(DOMAIN, "/api/models/acme/*")] == ("asia-east1", "shared-changhua-county-prod")
    assert after[(DOMAIN, "/api/models/new-co/*")] == HOME
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {(DOMAIN, "/api/models/acme/*"), (DOMAIN, "/api/models/new-co/*")}


def test_https_on_443_with_a_managed_certificate_and_http_redirects(prod_plan):
    cert = one(prod_plan, "gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert sorted(cert["managed"]["domains"]) == sorted([DOMAIN, f"us.{DOMAIN}", f"eu.{DOMAIN}", f"ap.{DOMAIN}"])
    address = one(prod_plan, "gcp:compute/globalAddress:GlobalAddress")
    rules = {r.inputs["portRange"]: r.inputs for r in prod_plan.custom(
        "gcp:compute/globalForwardingRule:GlobalForwardingRule")}
    assert set(rules) == {"443", "80"}
    assert all(r["loadBalancingScheme"] == "EXTERNAL_MANAGED" for r in rules.values())
    assert {r["ipAddress"] for r in rules.values()} == {"203.0.113.10"}, "one address for both ports"
    assert address["addressType"] == "EXTERNAL"

    https = next(r for r in prod_plan.custom("gcp:compute/targetHttpsProxy:TargetHttpsProxy")
                 if resource_id(r.name) == rules["443"]["target"])
    assert https.inputs["sslCertificates"] == [resource_id("lb")]
    assert https.inputs["urlMap"] == resource_id("lb")  # the routing map, with hosts and tenants
    http = next(r for r in prod_plan.custom("gcp:compute/targetHttpProxy:TargetHttpProxy")
                if resource_id(r.name) == rules["80"]["target"])
    redirect = next(r.inputs for r in prod_plan.custom(URL_MAP) if resource_id(r.name) == http.inputs["urlMap"])
    assert redirect["defaultUrlRedirect"]["httpsRedirect"] is True and "hostRules" not in redirect
    assert prod_plan.outputs["shared_balancer"]["ip_address"] == "203.0.113.10"
    assert prod_plan.outputs["shared_balancer"]["hosts"] == {
        "apex": DOMAIN, "us-central1": f"us.{DOMAIN}", "europe-west1": f"eu.{DOMAIN}", "asia-east1": f"ap.{DOMAIN}"}


def test_plan_lists_hosts_tenant_rules_and_buckets(capsys):
    assert main(["plan", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    section = out.split("Load balancer routing", 1)[1].split("Resources by type", 1)[0]
    assert re.search(rf"^eu\.{re.escape(DOMAIN)}\s+\* \(default\)\s+europe-west1\s+shared-st-ghislain-prod$", section,
                     re.M)
    assert re.search(rf"^{re.escape(DOMAIN)}\s+/api/models/initech/\*\s+asia-east1\s+shared-changhua-county-prod$",
                     section, re.M)
    assert re.search(r"^asia-east1\s+my-gcp-project-prod-models-asia-east1\s", section, re.M)


def tenant(**fields: object) -> dict:
    return {"data_region": "us-central1", "key_sha256": ["a" * 64], **fields}


@pytest.mark.parametrize(("tenants", "message"), [
    ({"acme": tenant(data_region="us-east1")},
     r"Pulumi\.dev\.yaml: tenants\.acme\.data_region: 'us-east1' is not a shared region; choose one of "
     r"us-central1, europe-west1, asia-east1"),
    ({"..": tenant()}, r"Pulumi\.dev\.yaml: tenants: tenant '\.\.': owner names are URL path segments"),
    ({"acme/../x": tenant()}, r"tenant 'acme/\.\./x': owner names .*no '\.\.', '/'"),
    ({"Acme_Corp": tenant()}, r"tenant 'Acme_Corp': owner names"),
    ({"-acme": tenant()}, r"tenant '-acme'"),
    ({"a" * 40: tenant()}, r"1-39 lowercase letters"),
    ({"acme": tenant(key_sha256=["not-a-digest"])},
     r"Pulumi\.dev\.yaml: tenants\.acme\.key_sha256: entry 0 \(12 characters\) is not a sha256 hex digest"),
    ({"acme": tenant(key_sha256=[])}, r"tenants\.acme\.key_sha256: List should have at least 1 item"),
    ({"acme": tenant(region="us-central1")}, r"Pulumi\.dev\.yaml: tenants\.acme: unknown key 'region'"),
    ({"acme": {"key_sha256": ["a" * 64]}}, r"tenants\.acme\.data_region: required field is missing"),
])
def test_tenant_mistakes_stop_the_plan_with_a_clear_message(tenants, message):
    with pytest.raises(FleetError, match=message):
        evaluate("dev", config_overrides={"yolo-fleet:tenants": json.dumps(tenants)})


@pytest.mark.parametrize(("domain", "message"), [
    ("null", r"shared_domain is required: the shared services are only reachable through the load balancer"),
    ('"https://inference.example.com"', r"Pulumi\.dev\.yaml: shared_domain: 'https://inference\.example\.com' is "
                                         r"not a domain name"),
    ('"Inference.Example.com"', r"shared_domain: 'Inference\.Example\.com' is not a domain name: lowercase labels"),
])
def test_domain_mistakes_stop_the_plan(domain, message):
    with pytest.raises(FleetError, match=message):
        evaluate("dev", config_overrides={"yolo-fleet:shared_domain": domain})


def test_shared_services_need_gen2_to_mount_their_bucket():
    gen1, gen2 = json.dumps({"execution_environment": "gen1"}), json.dumps({"execution_environment": "gen2"})
    with pytest.raises(FleetError, match=r"Pulumi\.dev\.yaml: shared in regions\[us-central1\]: "
                                         r"execution_environment: .* only on gen2"):
        evaluate("dev", config_overrides={"yolo-fleet:shared_settings": gen1})
    plan = evaluate("dev", config_overrides={"yolo-fleet:settings": gen1, "yolo-fleet:shared_settings": gen2})
    assert plan.custom("gcp:storage/bucket:Bucket"), "dedicated endpoints may still run gen1"


def test_fleet_plan_exits_2_on_a_tenant_in_another_region(monkeypatch, capsys):
    tenants = {"acme": tenant(data_region="europe-west4")}
    monkeypatch.setattr("fleet.cli.evaluate", functools.partial(
        evaluate, config_overrides={"yolo-fleet:tenants": json.dumps(tenants)}))
    assert main(["plan", "--stack", "dev"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", "nothing planned"
    assert captured.err.splitlines() == [
        "fleet plan: stopped before declaring anything:",
        "Pulumi.dev.yaml: tenants.acme.data_region: 'europe-west4' is not a shared region; choose one of "
        "us-central1, europe-west1, asia-east1"]
