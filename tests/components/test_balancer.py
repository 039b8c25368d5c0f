"""The global balancer with `domain` set: a host per model (nearest healthy region) and per endpoint, the shared
API's hosts beside them, certificates of at most 100 names, TLS 1.2+ and a Cloud Armor rate limit everywhere."""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict

import pytest

from components.errors import FleetError
from components.routing import BalancerRoutes, ModelHosts, SharedRoutes
from fleet.cli import main
from fleet.mocks import resource_id
from fleet.program import Plan, evaluate
from tests.stacks import THREE_MODELS, plan_stack, three_models_everywhere

DOMAIN = "models.example.com"
SHARED = "inference-dev.example.com"  # Pulumi.dev.yaml's shared_domain
URL_MAP = "gcp:compute/uRLMap:URLMap"
BACKEND = "gcp:compute/backendService:BackendService"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
CERT = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
SSL_POLICY = "gcp:compute/sSLPolicy:SSLPolicy"
ARMOR = "gcp:compute/securityPolicy:SecurityPolicy"
DEV_ENDPOINTS = {"demo": {"us-central1": "demo-iowa", "europe-west1": "demo-st-ghislain",
                          "asia-northeast1": "demo-tokyo"},
                 "demo-raw": {"us-central1": "demo-raw-iowa"}}


def with_domain(**extra: str) -> dict[str, str]:
    return {"yolo-fleet:domain": DOMAIN, **extra}


@pytest.fixture(scope="module")
def dev_domain() -> Plan:
    return evaluate("dev", config_overrides=with_domain())


@pytest.fixture(scope="module")
def three_everywhere() -> Plan:
    """Three models in all 43 regions (129 endpoints), the shared API, under `domain`."""
    return plan_stack("prod", three_models_everywhere())


# --- a resolver: (host, path) -> backend service, from the URL map alone, as the balancer's rules work ----------
def _path_matches(pattern: str, path: str) -> bool:
    """A URL map path rule: exact, or a prefix when it ends in '/*'."""
    return path.startswith(pattern[:-1]) if pattern.endswith("/*") else path == pattern


def resolve(url_map: dict, host: str, path: str) -> str:
    """The backend service id a request for (host, path) reaches: the host rule naming the host (else the map's
    default service), then that path matcher's longest matching path rule (else its default service)."""
    rule = next((r for r in url_map.get("hostRules", []) if host in r["hosts"]), None)
    if rule is None:
        return url_map["defaultService"]
    matcher = next(m for m in url_map["pathMatchers"] if m["name"] == rule["pathMatcher"])
    candidates = [(len(p), r["service"]) for r in matcher.get("pathRules", []) for p in r["paths"]
                  if _path_matches(p, path)]
    return max(candidates)[1] if candidates else matcher["defaultService"]


def routing_map(plan: Plan) -> dict:
    [url_map] = [r.inputs for r in plan.custom(URL_MAP) if r.inputs.get("hostRules")]
    return url_map


def backend_targets(plan: Plan) -> dict[str, dict[str, str]]:
    """Backend service id -> {region: Cloud Run service} of its serverless NEGs."""
    negs = {resource_id(r.name): r.inputs for r in plan.custom(NEG)}
    return {resource_id(r.name): {negs[b["group"]]["region"]: negs[b["group"]]["cloudRun"]["service"]
                                  for b in r.inputs["backends"]} for r in plan.custom(BACKEND)}


def lands(plan: Plan, host: str, path: str = "/api/predict") -> dict[str, str]:
    return backend_targets(plan)[resolve(routing_map(plan), host, path)]


def test_each_host_and_tenant_path_lands_where_it_must(dev_domain):
    """Model hosts reach every region of the model, endpoint hosts one endpoint, shared hosts and tenant paths
    their shared region; an unknown host the map's default."""
    demo = {rid: f"{name}-dev" for rid, name in DEV_ENDPOINTS["demo"].items()}
    assert lands(dev_domain, f"demo.{DOMAIN}") == demo
    assert lands(dev_domain, f"demo-raw.{DOMAIN}") == {"us-central1": "demo-raw-iowa-dev"}
    assert lands(dev_domain, f"demo-tokyo.{DOMAIN}") == {"asia-northeast1": "demo-tokyo-dev"}
    assert lands(dev_domain, f"demo-raw-iowa.{DOMAIN}", "/api/models/acme/x/y/predict") == {
        "us-central1": "demo-raw-iowa-dev"}, "tenant paths belong to the shared host only"
    assert lands(dev_domain, f"eu.{SHARED}") == {"europe-west1": "shared-st-ghislain-dev"}
    assert lands(dev_domain, SHARED, "/api/models/globex/p/m/predict") == {"europe-west1": "shared-st-ghislain-dev"}
    assert lands(dev_domain, SHARED, "/api/models/acme/p/m/predict") == {"us-central1": "shared-iowa-dev"}
    assert lands(dev_domain, SHARED, "/api/models/initech/p/m/predict") == {"us-central1": "shared-iowa-dev"}
    assert lands(dev_domain, "203.0.113.10") == {"us-central1": "shared-iowa-dev"}


def test_the_resolver_follows_the_longest_path_rule():
    url_map = {"defaultService": "d", "hostRules": [{"hosts": ["h"], "pathMatcher": "m"}],
               "pathMatchers": [{"name": "m", "defaultService": "md", "pathRules": [
                   {"paths": ["/api/*"], "service": "short"}, {"paths": ["/api/models/acme/*"], "service": "long"}]}]}
    assert resolve(url_map, "h", "/api/models/acme/p") == "long"
    assert resolve(url_map, "h", "/api/other") == "short"
    assert resolve(url_map, "h", "/health") == "md"
    assert resolve(url_map, "other", "/api/models/acme/p") == "d"


def test_one_neg_per_model_and_region_and_each_model_spans_its_regions(three_everywhere):
    plan = three_everywhere
    dedicated = [r.inputs for r in plan.custom(NEG) if not r.inputs["cloudRun"]["service"].startswith("shared-")]
    pairs = [(n["region"], n["cloudRun"]["service"]) for n in dedicated]
    assert len(pairs) == len(set(pairs)) == 3 * 43, "one serverless NEG per (model, region)"
    by_model = {name: backend_targets(plan)[resolve(routing_map(plan), f"{name}.models.yolo-fleet-test.dev", "/")]
                for name in THREE_MODELS}
    regions = {n["region"] for n in dedicated}
    assert len(regions) == 43
    for name, targets in by_model.items():
        assert set(targets) == regions, name
        assert all(service.startswith(f"{name}-") for service in targets.values()), name


def test_model_backends_eject_failing_regions_and_endpoint_backends_are_single(dev_domain):
    backends = {r.inputs["name"]: r.inputs for r in dev_domain.custom(BACKEND)}
    model = backends["yolo-fleet-dev-model-demo"]
    assert len(model["backends"]) == 3
    assert model["outlierDetection"] == {"consecutiveErrors": 5, "enforcingConsecutiveErrors": 100,
                                         "interval": {"seconds": 10}, "baseEjectionTime": {"seconds": 30},
                                         "maxEjectionPercent": 50}
    assert len(backends["yolo-fleet-dev-demo-tokyo"]["backends"]) == 1
    assert all(b["loadBalancingScheme"] == "EXTERNAL_MANAGED" and b["protocol"] == "HTTPS"
               for b in backends.values())


def test_every_host_has_a_rule_and_a_certificate_of_at_most_100_names(three_everywhere):
    plan = three_everywhere
    hosts = [h for rule in routing_map(plan)["hostRules"] for h in rule["hosts"]]
    assert len(hosts) == len(set(hosts)) == 3 + 3 * 43 + 4  # models, endpoints, shared regions and apex
    certificates = [r for r in plan.custom(CERT)]
    names = [d for c in certificates for d in c.inputs["managed"]["domains"]]
    assert all(len(c.inputs["managed"]["domains"]) <= 100 for c in certificates)
    assert sorted(names) == sorted(hosts), "every host on exactly one certificate"
    [proxy] = [r.inputs for r in plan.custom(HTTPS_PROXY)]
    assert sorted(proxy["sslCertificates"]) == sorted(resource_id(c.name) for c in certificates)
    assert len(certificates) == 4, "one per model (44 names each) and one for the shared hosts"


def test_a_group_over_100_names_is_split_into_certificates_of_at_most_100():
    """A catalog with more regions than today's 43: a model's names spill into further certificates."""
    model = ModelHosts("big", f"big.{DOMAIN}", {f"big-{i}": f"big-{i}.{DOMAIN}" for i in range(150)})
    shared = SharedRoutes(SHARED, {"us-central1": f"us.{SHARED}"}, {})
    groups = BalancerRoutes(shared, DOMAIN, [model]).certificate_groups()
    assert [(owner, chunk, len(domains)) for owner, chunk, domains in groups] == [
        ("big", 0, 100), ("big", 1, 51), (None, 0, 2)]
    assert [d for _, _, domains in groups[:2] for d in domains] == [model.host, *model.endpoints.values()]


def test_tls_policy_on_every_https_proxy_and_armor_on_every_backend(three_everywhere, dev_domain, prod_plan):
    for plan in (three_everywhere, dev_domain, prod_plan):
        [policy] = plan.custom(SSL_POLICY)
        assert (policy.inputs["minTlsVersion"], policy.inputs["profile"]) == ("TLS_1_2", "MODERN")
        proxies = plan.custom(HTTPS_PROXY)
        assert proxies and {p.inputs.get("sslPolicy") for p in proxies} == {resource_id(policy.name)}
        [armor] = plan.custom(ARMOR)
        backends = plan.custom(BACKEND)
        assert backends and {b.inputs.get("securityPolicy") for b in backends} == {resource_id(armor.name)}
        [limit] = [r for r in armor.inputs["rules"] if r.get("rateLimitOptions")]
        assert limit["action"] == "throttle" and limit["preview"] is False
        assert limit["rateLimitOptions"]["enforceOnKey"] == "IP"
        assert limit["rateLimitOptions"]["rateLimitThreshold"] == {"count": 600, "intervalSec": 60}


def test_rate_limit_thresholds_ban_and_preview_come_from_stack_config():
    plan = evaluate("dev", config_overrides=with_domain(**{"yolo-fleet:rate_limit": json.dumps(
        {"requests": 120, "interval_seconds": 10, "action": "ban", "ban_seconds": 300, "preview": True})}))
    [limit] = [r for r in plan.custom(ARMOR)[0].inputs["rules"] if r.get("rateLimitOptions")]
    assert limit["action"] == "rate_based_ban" and limit["preview"] is True
    assert limit["rateLimitOptions"]["banDurationSec"] == 300
    assert limit["rateLimitOptions"]["rateLimitThreshold"] == {"count": 120, "intervalSec": 10}
    assert limit["rateLimitOptions"]["banThreshold"] == {"count": 120, "intervalSec": 10}
    tls = evaluate("dev", config_overrides={"yolo-fleet:tls": json.dumps(
        {"min_tls_version": "TLS_1_3", "profile": "RESTRICTED"})}).custom(SSL_POLICY)[0].inputs
    assert (tls["minTlsVersion"], tls["profile"]) == ("TLS_1_3", "RESTRICTED")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("rate_limit", {"interval_seconds": 45}, r"Pulumi\.dev\.yaml: rate_limit\.interval_seconds: 45 is not a "
                                             r"Cloud Armor interval"),
    ("rate_limit", {"requests": 0}, r"rate_limit\.requests: Input should be greater than or equal to 1"),
    ("tls", {"min_tls_version": "TLS_1_0"}, r"Pulumi\.dev\.yaml: tls\.min_tls_version: Input should be 'TLS_1_2' "
                                            r"or 'TLS_1_3'"),
    ("domain", "https://models.example.com", r"Pulumi\.dev\.yaml: domain: 'https://models\.example\.com' is not a "
                                             r"domain name: lowercase labels joined by dots, with no scheme"),
])
def test_bad_balancer_settings_stop_the_plan(key, value, message):
    with pytest.raises(FleetError, match=message):
        evaluate("dev", config_overrides={f"yolo-fleet:{key}": json.dumps(value)})


def test_dashboard_charts_the_balancer_by_backend_region_and_each_model_host_alerts(dev_domain):
    [dashboard] = dev_domain.custom("gcp:monitoring/dashboard:Dashboard")
    charts = {t["widget"]["title"]: t["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
              for t in json.loads(dashboard.inputs["dashboardJson"])["mosaicLayout"]["tiles"]
              if t["widget"]["title"].startswith("Balancer")}
    assert set(charts) == {"Balancer requests/s by backend region", "Balancer 5xx/s by backend region",
                           "Balancer p95 latency by backend region"}
    for chart in charts.values():
        assert 'resource.type = "https_lb_rule" AND resource.labels.url_map_name = "yolo-fleet-dev"' in chart["filter"]
        assert chart["aggregation"]["groupByFields"] == ["resource.label.backend_scope"]
    assert "response_code_class = 500" in charts["Balancer 5xx/s by backend region"]["filter"]
    alerts = {r.inputs["userLabels"]["model"]: r.inputs for r in dev_domain.custom(
        "gcp:monitoring/alertPolicy:AlertPolicy") if r.inputs["userLabels"].get("alert") == "host-error-ratio"}
    assert set(alerts) == {"demo", "demo-raw"}
    condition = alerts["demo"]["conditions"][0]["conditionThreshold"]
    assert 'resource.labels.backend_target_name = "yolo-fleet-dev-model-demo"' in condition["filter"]
    assert "response_code_class = 500" in condition["filter"]
    assert "response_code_class" not in condition["denominatorFilter"]
    assert condition["thresholdValue"] == 0.05
    assert alerts["demo"]["displayName"].startswith(f"demo.{DOMAIN} (dev): 5xx ratio")


def test_plain_http_redirects_to_https(dev_domain):
    redirect = [r.inputs for r in dev_domain.custom(URL_MAP) if not r.inputs.get("hostRules")]
    assert [r["defaultUrlRedirect"]["httpsRedirect"] for r in redirect] == [True]


def test_domain_unset_declares_no_dedicated_balancer(prod_plan):
    assert "balancer" not in prod_plan.outputs
    services = {r.inputs["cloudRun"]["service"] for r in prod_plan.custom(NEG)}
    assert services == {"shared-iowa-prod", "shared-st-ghislain-prod", "shared-changhua-county-prod"}
    assert all(len(r.inputs["backends"]) == 1 and "outlierDetection" not in r.inputs
               for r in prod_plan.custom(BACKEND))
    assert not [r for r in prod_plan.custom(CERT) if any("demo" in d for d in r.inputs["managed"]["domains"])]


def test_the_stack_exports_each_host_url(dev_domain):
    out = dev_domain.outputs["balancer"]
    assert out["ip_address"] == "203.0.113.10"
    assert out["models"] == {"demo": f"https://demo.{DOMAIN}", "demo-raw": f"https://demo-raw.{DOMAIN}"}
    assert out["endpoints"] == {name: f"https://{name}.{DOMAIN}"
                                for regions in DEV_ENDPOINTS.values() for name in regions.values()}


def test_one_domain_for_everything_puts_the_shared_hosts_under_it():
    plan = evaluate("dev", config_overrides=with_domain(**{"yolo-fleet:shared_domain": "null"}))
    assert lands(plan, f"us.{DOMAIN}") == {"us-central1": "shared-iowa-dev"}
    assert lands(plan, DOMAIN, "/api/models/globex/p/m") == {"europe-west1": "shared-st-ghislain-dev"}
    assert lands(plan, f"demo.{DOMAIN}").keys() == DEV_ENDPOINTS["demo"].keys()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"yolo-fleet:models": json.dumps([{"name": "demo", "regions": ["us-central1"]},
                                       {"name": "demo-iowa", "regions": ["europe-west1"]}])},
     r"host demo-iowa\.models\.example\.com would serve both endpoint demo-iowa and model demo-iowa; rename the "
     r"model\n"),  # the shared API has no part in it
    ({"yolo-fleet:models": json.dumps([{"name": "eu", "regions": ["us-central1"]}]),
      "yolo-fleet:shared_domain": "null"},
     r"host eu\.models\.example\.com would serve both the shared API's host for europe-west1 and model eu; rename "
     r"the model, or give the shared API its own shared_domain"),
    ({"yolo-fleet:domain": json.dumps("inference-dev.example.com"), "yolo-fleet:models": json.dumps(
        [{"name": "ap", "regions": ["us-central1"]}])},
     r"host ap\.inference-dev\.example\.com would serve both the shared API's host for asia-east1 and model ap"),
    ({"yolo-fleet:domain": json.dumps(("a" * 60 + ".") * 4 + "example.com")},
     r"domain: String should have at most 200 characters"),
    ({"yolo-fleet:models": json.dumps([{"name": "model", "regions": ["us-central1"]},
                                       {"name": "iowa", "regions": ["europe-west1"]}])},
     r"endpoint model-iowa's backend and model iowa's backend would both be backend service "
     r"yolo-fleet-dev-model-iowa; rename the model"),
    ({"yolo-fleet:models": json.dumps([{"name": f"m{i}", "regions": ["us-central1"]} for i in range(15)])},
     r"domain: the balancer would need 16 managed certificates .* an HTTPS proxy takes at most 15"),
    ({"yolo-fleet:settings": json.dumps({"ingress": "internal"})},
     r"demo-iowa in regions\[us-central1\]: ingress: 'internal' refuses the load balancer's traffic"),
])
def test_host_clashes_and_bad_hosts_stop_the_plan_naming_both(overrides, message):
    with pytest.raises(FleetError, match=message):
        evaluate("dev", config_overrides={**with_domain(), **overrides})


def test_an_endpoint_name_that_is_no_dns_label_stops_the_plan(write_catalog):
    def city_without_ascii(data: dict) -> None:
        next(r for r in data["regions"] if r["id"] == "us-central1")["city"] = "東京"

    with pytest.raises(FleetError, match=r"Pulumi\.dev\.yaml: models\[demo\] in regions\[us-central1\]: host "
                                         r"'demo-\.models\.example\.com': 'demo-' is not a DNS label"):
        evaluate("dev", catalog=write_catalog(city_without_ascii), config_overrides=with_domain())


def test_fleet_plan_exits_2_on_a_host_clash_and_otherwise_shows_every_host(monkeypatch, capsys):
    clash = with_domain(**{"yolo-fleet:models": json.dumps([{"name": "demo", "regions": ["us-central1"]},
                                                            {"name": "demo-iowa", "regions": ["europe-west1"]}])})
    monkeypatch.setattr("fleet.cli.evaluate", functools.partial(evaluate, config_overrides=clash))
    assert main(["plan", "--stack", "dev"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "would serve both endpoint demo-iowa and model demo-iowa" in captured.err
    monkeypatch.setattr("fleet.cli.evaluate", functools.partial(evaluate, config_overrides=with_domain()))
    assert main(["plan", "--stack", "dev"]) == 0
    section = capsys.readouterr().out.split("Load balancer routing", 1)[1].split("Resources by type", 1)[0]
    assert "TLS: TLS_1_2 minimum (MODERN); Cloud Armor: at most 600 requests per 60 s per client IP" in section
    assert re.search(rf"^demo\.{re.escape(DOMAIN)}\s+\* \(default\)\s+nearest healthy of 3\s+demo-iowa-dev \.\.\. "
                     r"demo-tokyo-dev$", section, re.M)
    assert re.search(rf"^demo-tokyo\.{re.escape(DOMAIN)}\s+\* \(default\)\s+asia-northeast1\s+demo-tokyo-dev$",
                     section, re.M)
    hosts = defaultdict(int)
    for line in section.splitlines():
        if line.endswith(("-dev", "...")) and "." in line.split()[0]:
            hosts[line.split()[0]] += 1
    assert {f"{n}.{DOMAIN}" for n in ("demo", "demo-raw", "demo-iowa", "demo-tokyo")} <= set(hosts)
