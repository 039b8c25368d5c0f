"""The cost model on hand-computed cases, and `fleet cost` on the real plans."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import pytest
import yaml
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.catalog import load_catalog
from fleet.cli import main
from fleet.cost import grand_total, platform_costs, stack_costs
from fleet.pricing import (
    CLOUD_RUN_SERVICE,
    DEFAULT_PRICES,
    FORWARDING_RULE,
    IMAGE,
    SECRET,
    SECRET_VERSION,
    SECURITY_POLICY,
    PlatformPrices,
    PlatformShape,
    PriceBook,
    PriceError,
    ServiceShape,
    TierPrices,
    Traffic,
    always_on_monthly,
    load_prices,
    platform_shape,
    price_platform,
    price_services,
    service_shape,
    traffic_monthly,
)
from fleet.program import PROJECT_DIR, evaluate

BOOK = load_prices()
MONTH = 730 * 3600  # seconds_per_month in fleet/prices.yaml
TIER1, TIER2 = BOOK.tiers[1], BOOK.tiers[2]
# demo-iowa as prod plans it: 2 vCPU, 4 GiB, one warm instance, request-based billing.
IOWA = ServiceShape(name="demo-iowa", region="us-central1", model="demo", cpu=2, memory_gib=4, gpus=0,
                    min_instances=1, max_instances=10, request_based=True, gpu_zonal_redundancy=False)


def test_price_file_has_a_source_and_date_beside_every_price():
    data = yaml.safe_load(DEFAULT_PRICES.read_text())
    assert BOOK.seconds_per_month == MONTH
    for prices in [*data["tiers"].values(), data["platform"]]:
        for price in prices.values():
            assert price["source"] and price["date"], price


def test_always_on_request_based_is_min_instances_at_the_idle_rates():
    # 1 x (2 vCPU x $0.0000025 + 4 GiB x $0.0000025) x 2,628,000 s = $39.42
    assert always_on_monthly(IOWA, TIER1, MONTH) == pytest.approx(39.42)
    # tier 2: 1 x (2 x $0.0000035 + 4 x $0.0000035) x 2,628,000 = $55.188
    assert always_on_monthly(IOWA, TIER2, MONTH) == pytest.approx(55.188)
    assert always_on_monthly(replace(IOWA, min_instances=0), TIER1, MONTH) == 0


def test_always_on_instance_based_with_a_gpu():
    gpu = replace(IOWA, cpu=4, memory_gib=16, gpus=1, min_instances=2, request_based=False)
    # 2 x (4 x $0.000018 + 16 x $0.000002 + $0.0001867) x 2,628,000 = 2 x 0.0002907 x 2,628,000 = $1,527.91
    assert always_on_monthly(gpu, TIER1, MONTH) == pytest.approx(1527.9192)
    redundant = replace(gpu, gpu_zonal_redundancy=True)  # + 2 x ($0.0002909 - $0.0001867) x 2,628,000
    assert always_on_monthly(redundant, TIER1, MONTH) == pytest.approx(1527.9192 + 547.6752)


def test_traffic_request_based_at_1_rps_and_100_ms():
    cost, capped = traffic_monthly(IOWA, TIER1, Traffic(1, 100), MONTH)
    # 2,628,000 requests x 0.1 s = 262,800 busy s x (2 x $0.000024 + 4 x $0.0000025) = $15.2424
    # + 2.628 million requests x $0.40 = $1.0512
    assert cost == pytest.approx(15.2424 + 1.0512)
    assert not capped


def test_traffic_beyond_max_instances_is_capped():
    cost, capped = traffic_monthly(replace(IOWA, max_instances=1), TIER1, Traffic(20, 100), MONTH)
    # 20 rps x 0.1 s = 2 busy instances, but max is 1: 2,628,000 busy s at the active rate + all requests
    assert capped
    assert cost == pytest.approx(MONTH * 0.000058 + 20 * MONTH / 1e6 * 0.40)


def test_traffic_instance_based_is_only_what_the_warm_instances_cannot_serve():
    warm = replace(IOWA, request_based=False, min_instances=1)
    assert traffic_monthly(warm, TIER1, Traffic(5, 100), MONTH) == (0.0, False)  # 0.5 busy instances < 1 warm
    cost, _ = traffic_monthly(warm, TIER1, Traffic(30, 100), MONTH)  # 3 busy instances, 1 already paid for
    assert cost == pytest.approx(2 * MONTH * (2 * 0.000018 + 4 * 0.000002))


def test_service_shape_reads_the_real_plan(prod_plan):
    iowa = next(r for r in prod_plan.custom("gcp:cloudrunv2/service:Service") if r.name == "demo-iowa")
    assert service_shape(iowa.name, iowa.inputs) == replace(IOWA, name="demo-iowa-prod")  # its Cloud Run service
    shared = next(r for r in prod_plan.custom("gcp:cloudrunv2/service:Service") if r.name == "shared-iowa")
    assert service_shape(shared.name, shared.inputs).model == "shared"


def test_fleet_cost_json_totals_per_region_model_and_geography(capsys):
    assert main(["cost", "--stack", "prod", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Warm in prod: demo-iowa ($39.42) and the three tier-1 shared services (4 vCPU, 8 GiB: $78.84 each).
    assert report["cloud_run"]["always_on"] == pytest.approx(39.42 + 3 * 78.84)
    assert report["by_region"]["us-central1"]["always_on"] == pytest.approx(39.42 + 78.84)
    assert report["by_model"]["shared"] == {"services": 3, "always_on": 236.52, "traffic": pytest.approx(94.61),
                                            "total": pytest.approx(331.13)}
    assert sum(g["services"] for g in report["by_geography"].values()) == 46
    assert report["by_geography"]["americas"]["services"] == 15  # 14 regions + shared-iowa
    assert sum(g["total"] for g in report["by_geography"].values()) == pytest.approx(report["cloud_run"]["total"],
                                                                                    abs=0.1)
    assert report["assumptions"]["requests_per_second_per_service"] == 1.0
    # the grand total adds the stack-wide lines: one forwarding-rule charge (2 rules) for 730 h = $18.25 ...
    platform = {line["item"]: line for line in report["platform"]}
    assert platform["load balancer forwarding rules"]["always_on"] == 18.25
    # ... Cloud Armor's policy and its 2 rules ($5 + 2 x $1) ...
    assert platform["Cloud Armor"]["always_on"] == 7.0
    assert report["total"]["always_on"] == pytest.approx(report["cloud_run"]["always_on"] + 18.25 + 0.12 + 0.12 + 7.0)
    assert report["total"]["total"] == pytest.approx(report["cloud_run"]["total"]
                                                     + sum(line["total"] for line in report["platform"]), abs=0.02)
    assert "Secret Manager versions and access operations" in report["covers"]
    assert any("egress" in item for item in report["not_included"])


def test_fleet_cost_traffic_follows_the_assumed_rate(capsys):
    assert main(["cost", "--stack", "dev", "--json", "--requests-per-second", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cloud_run"] == {"always_on": 0, "traffic": 0, "total": 0}
    assert report["total"]["traffic"] == 0, "no requests: nothing processed by the balancer, no secret reads"
    assert report["total"]["always_on"] == pytest.approx(18.25 + 0.12 + 0.12 + 7.0), "the balancer's rules (and " \
        "Cloud Armor's) still bill"
    assert main(["cost", "--stack", "dev", "--requests-per-second", "2", "--latency-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "at 2 requests/s per service, 50 ms, 100 KiB in and 2 KiB out each" in out
    assert "Covers: Cloud Run" in out and "Not included: internet and cross-region egress" in out
    assert out.index("By region") < out.index("By model") < out.index("By geography")


def test_price_file_without_a_regions_tier_exits_2_and_prints_nothing(tmp_path, capsys):
    data = yaml.safe_load(DEFAULT_PRICES.read_text())
    del data["tiers"][2]
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(data))
    assert main(["cost", "--stack", "prod", "--prices", str(prices)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no prices for pricing tier 2" in captured.err and "region" in captured.err


def test_bad_price_file_and_bad_flags_exit_2(tmp_path, capsys):
    prices = tmp_path / "prices.yaml"
    prices.write_text("seconds_per_month: 2628000\ntiers:\n  1: {request_vcpu_second: {usd: -1}}\n")
    assert main(["cost", "--prices", str(prices)]) == 2
    err = capsys.readouterr().err
    assert "prices.yaml: tiers[1].request_vcpu_second.usd: Input should be greater than or equal to 0" in err
    assert main(["cost", "--latency-ms", "0"]) == 2
    assert "--latency-ms > 0" in capsys.readouterr().err


# A price book in which every price differs from every other, so pricing one quantity at another's price
# changes the total; a one-hour "month" keeps the hand arithmetic readable.
DISTINCT = {
    "seconds_per_month": 3600,
    "tiers": {
        1: dict(zip(TierPrices.model_fields, (0.011, 0.013, 0.017, 0.019, 29.0, 0.031, 0.037, 0.041, 0.043),
                    strict=True)),
        2: dict(zip(TierPrices.model_fields, (0.047, 0.053, 0.059, 0.061, 67.0, 0.071, 0.073, 0.079, 0.083),
                    strict=True)),
    },
    "platform": dict(zip(PlatformPrices.model_fields, (0.89, 0.97, 1.01, 1.03, 1.17, 1.19, 1.23, 1.07, 1.09, 1.13),
                         strict=True)),
}


def distinct_book(tmp_path) -> PriceBook:
    def priced(prices: dict[str, float]) -> dict[str, dict]:
        return {k: {"usd": v, "source": "test", "date": "2026-12-02"} for k, v in prices.items()}

    data = {**DISTINCT, "tiers": {t: priced(p) for t, p in DISTINCT["tiers"].items()},
            "platform": priced(DISTINCT["platform"])}
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_prices(path)


def test_distinct_prices_are_all_different():
    values = [v for t in DISTINCT["tiers"].values() for v in t.values()] + list(DISTINCT["platform"].values())
    assert len(values) == len(set(values)) == 9 * 2 + 10


SMALL = {  # demo in Iowa (tier 1) and Berlin (tier 2), request-based; the 3 shared services instance-based
    "yolo-fleet:models": json.dumps([{"name": "demo", "file": "models/demo-e2e.onnx",
                                      "regions": ["us-central1", "europe-west10"]}]),
    "yolo-fleet:forced_settings": json.dumps({"min_instances": 1, "max_instances": 2, "cpu": 1, "memory": "2Gi"}),
    "yolo-fleet:shared_settings": json.dumps({"cpu_idle": False}),
}


def test_a_small_plan_costs_exactly_the_hand_computed_total(tmp_path):
    book = distinct_book(tmp_path)
    plan = evaluate("dev", config_overrides=SMALL)
    traffic = Traffic(requests_per_second=1, latency_ms=100, request_kib=1024, response_kib=512,
                      secrets_recheck_seconds=2)
    costs = stack_costs(plan, load_catalog(PROJECT_DIR / "regions.yaml"), book, traffic)
    platform = {line.item: line for line in platform_costs(plan, book, traffic)}
    by_name = {c.shape.name: c for c in costs}  # by Cloud Run service (the stack's physical names)
    # demo-iowa, tier 1, request-based, 1 vCPU 2 GiB, 1 warm: idle (0.017 + 2 x 0.019) x 3600 s = 198.0;
    # traffic 3600 requests x 0.1 s = 360 busy s x (0.011 + 2 x 0.013) = 13.32 + 0.0036 M requests x 29 = 0.1044
    assert by_name["demo-iowa-dev"].always_on == pytest.approx(198.0)
    assert by_name["demo-iowa-dev"].traffic == pytest.approx(13.4244)
    # demo-berlin, tier 2: (0.059 + 2 x 0.061) x 3600 = 651.6; 360 x (0.047 + 2 x 0.053) + 0.0036 x 67 = 55.3212
    assert by_name["demo-berlin-dev"].always_on == pytest.approx(651.6)
    assert by_name["demo-berlin-dev"].traffic == pytest.approx(55.3212)
    # each shared service, tier 1, instance-based: (0.031 + 2 x 0.037) x 3600 = 378.0; the warm one serves 360 s
    for name in ("shared-iowa-dev", "shared-st-ghislain-dev", "shared-changhua-county-dev"):
        assert (by_name[name].always_on, by_name[name].traffic) == (pytest.approx(378.0), 0.0)
    # 2 forwarding rules: one first-5 charge for 1 h = 0.89
    assert platform["load balancer forwarding rules"].always_on == pytest.approx(0.89)
    # 3 balanced services x 3600 requests: 10.546875 GiB in x 1.01 + 5.2734375 GiB out x 1.03
    assert platform["load balancer data processed"].traffic == pytest.approx(10.65234375 + 5.431640625)
    # us, europe and asia repositories x 0.4 GB x 1.07
    assert platform["Artifact Registry storage"].always_on == pytest.approx(1.284)
    # the API key digests and the tenants file, each one version in one (automatic) location: 2 x 1.09
    assert platform["Secret Manager versions"].always_on == pytest.approx(2.18)
    # 5 services mount the keys, 3 the tenants file, each looked at once per 2 s of the 3600 s with requests:
    # 8 x 1800 = 14,400 / 10,000 x 1.13; looking on every request would be 8 x 3600 = 28,800 reads
    assert platform["Secret Manager access operations"].traffic == pytest.approx(1.6272)
    # Cloud Armor: one policy (1.17) with 2 rules (2 x 1.19); the 3 balanced services' 10,800 requests x 1.23 / M
    assert platform["Cloud Armor"].always_on == pytest.approx(3.55)
    assert platform["Cloud Armor"].traffic == pytest.approx(0.013284)
    per_request = replace(traffic, secrets_recheck_seconds=0)
    every_request = {line.item: line for line in platform_costs(plan, book, per_request)}
    assert every_request["Secret Manager access operations"].traffic == pytest.approx(3.2544)
    total = grand_total(costs, list(platform.values()))
    assert total["always_on"] == pytest.approx(198.0 + 651.6 + 3 * 378.0 + 0.89 + 1.284 + 2.18 + 3.55)  # 1991.504
    assert total["traffic"] == pytest.approx(13.4244 + 55.3212 + 16.083984375 + 1.6272 + 0.013284)  # 86.470068375
    assert total["total"] == pytest.approx(2077.974068375)


def test_forwarding_rules_beyond_five_and_replicated_secrets():
    rules = [(FORWARDING_RULE, f"rule-{i}", {}) for i in range(7)]
    secret = (SECRET, "keys", {"project": "p", "secretId": "keys", "replication": {"userManaged": {"replicas": [
        {"location": "us-east1"}, {"location": "europe-west1"}, {"location": "asia-east1"}]}}})
    version = (SECRET_VERSION, "keys", {"secret": "projects/p/secrets/keys"})
    shape = platform_shape([*rules, secret, version])
    assert (shape.forwarding_rules, shape.secret_version_locations) == (7, 3)
    assert shape.balanced_services == shape.repositories == shape.secret_mounts == 0
    lines = {line.item: line for line in price_platform(shape, BOOK)}
    # 730 h x ($0.025 for the first five + 2 x $0.01)
    assert lines["load balancer forwarding rules"].always_on == pytest.approx(730 * 0.045)
    assert lines["Secret Manager versions"].always_on == pytest.approx(3 * 0.06)
    assert set(lines) == {"load balancer forwarding rules", "Secret Manager versions"}, "only what the plan holds"


def test_a_stack_without_a_balancer_pays_for_none(write_catalog):
    def no_shared(data: dict) -> None:
        for entry in data["regions"]:
            if entry["id"] in data["shared"]["regions"]:
                entry["enabled"] = False

    models = [{"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["asia-northeast1"]}]
    plan = evaluate("dev", catalog=write_catalog(no_shared), config_overrides={"yolo-fleet:models": json.dumps(models)})
    items = {line.item for line in platform_costs(plan, BOOK, Traffic())}
    assert items == {"Artifact Registry storage", "Secret Manager versions", "Secret Manager access operations"}


def test_with_domain_every_endpoint_is_balanced_and_armored():
    """`domain` puts every dedicated endpoint behind the balancer: its data processing and Cloud Armor requests."""
    plain = platform_shape((r.type, r.name, r.inputs) for r in evaluate("dev").custom())
    domain = platform_shape((r.type, r.name, r.inputs) for r in evaluate(
        "dev", config_overrides={"yolo-fleet:domain": "models.example.com"}).custom())
    assert (plain.balanced_services, domain.balanced_services) == (3, 3 + 4), "3 shared + 4 dev endpoints"
    assert (domain.forwarding_rules, domain.security_policies, domain.security_rules) == (2, 1, 2)
    lines = {line.item: line for line in price_platform(domain, BOOK)}
    assert lines["Cloud Armor"].traffic == pytest.approx(7 * 2_628_000 / 1e6 * 0.75)


def test_negative_sizes_exit_2(capsys):
    assert main(["cost", "--request-kib", "-1"]) == 2
    assert "--request-kib must be >= 0" in capsys.readouterr().err


def gpu_shape(region: str, **changes: object) -> ServiceShape:
    """4 vCPU, 16 GiB, one L4, instance-based, one warm instance, up to 2."""
    values = {"name": f"gpu-{region}", "region": region, "model": "gpu", "cpu": 4.0, "memory_gib": 16.0, "gpus": 1,
              "min_instances": 1, "max_instances": 2, "request_based": False, "gpu_zonal_redundancy": False}
    return ServiceShape(**{**values, **changes})


def test_gpu_and_instance_prices_each_count_once_at_their_tiers_rate(tmp_path):
    """With every price distinct, each line of the bill shows which price it used: the L4 price or the zonal-
    redundant one, tier 1 (Iowa) or tier 2 (Mumbai), instance-based traffic only beyond what the warm instance
    serves, and a cap at max_instances. A one-hour month."""
    book, catalog = distinct_book(tmp_path), load_catalog(PROJECT_DIR / "regions.yaml")
    shapes = [gpu_shape("us-central1"), gpu_shape("us-east4", gpu_zonal_redundancy=True), gpu_shape("asia-south1"),
              gpu_shape("europe-west4", min_instances=0)]
    costs = {c.shape.name: c for c in price_services(shapes, catalog, book, Traffic(requests_per_second=2,
                                                                                     latency_ms=700))}
    # tier 1: 4 x 0.031 + 16 x 0.037 + 0.041 (L4) = 0.757 a second
    assert costs["gpu-us-central1"].always_on == pytest.approx(0.757 * 3600)
    # busy 2 x 3600 x 0.7 = 5040 s, of which the warm instance's 3600 s are paid for: 1440 s more
    assert costs["gpu-us-central1"].traffic == pytest.approx(1440 * 0.757)
    # zonal redundancy: the L4 at 0.043 instead
    assert costs["gpu-us-east4"].always_on == pytest.approx(0.759 * 3600)
    # tier 2: 4 x 0.071 + 16 x 0.073 + 0.079 = 1.531
    assert costs["gpu-asia-south1"].always_on == pytest.approx(1.531 * 3600)
    assert costs["gpu-asia-south1"].traffic == pytest.approx(1440 * 1.531)
    # nothing warm: no always-on cost, all 5040 busy seconds at the instance rate
    assert (costs["gpu-europe-west4"].always_on, costs["gpu-europe-west4"].capped) == (0.0, False)
    assert costs["gpu-europe-west4"].traffic == pytest.approx(5040 * 0.757)
    # 20 requests/s of 700 ms need 14 instances; max_instances 2 caps the busy time at 7200 s
    [capped] = price_services([gpu_shape("europe-west4", min_instances=0)], catalog, book,
                              Traffic(requests_per_second=20, latency_ms=700))
    assert capped.capped and capped.traffic == pytest.approx(7200 * 0.757)
    [full] = price_services([gpu_shape("europe-west4", min_instances=0)], catalog, book,
                            Traffic(requests_per_second=2, latency_ms=1000))
    assert not full.capped and full.traffic == pytest.approx(7200 * 0.757), "exactly max_instances busy: not capped"


def test_forwarding_rules_beyond_five_at_their_own_price(tmp_path):
    rules = [(FORWARDING_RULE, f"rule-{i}", {}) for i in range(7)]
    [line] = price_platform(platform_shape(rules), distinct_book(tmp_path))
    assert line.always_on == pytest.approx(0.89 + 2 * 0.97)  # the first five together, then each one more


def gpu_inputs(**template: object) -> dict:
    """A GPU service's Cloud Run inputs in the form the program plans them (tests/components/test_gpu_plan.py pins
    the limits and cpuIdle there): big in Iowa, dev stack, up to 3 L4s, one kept warm (a model's min_instances: 1),
    zonal redundancy kept."""
    return {
        "name": "big-iowa-dev", "location": "us-central1",
        "labels": {"model": "big", "managed-by": "yolo-fleet", "stack": "dev", "role": "dedicated"},
        "template": {
            "nodeSelector": {"accelerator": "nvidia-l4"}, "scaling": {"minInstanceCount": 1.0, "maxInstanceCount": 3.0},
            "gpuZonalRedundancyDisabled": False,
            "containers": [{"resources": {"startupCpuBoost": True, "cpuIdle": False,
                                          "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}}],
            **template},
    }


BIG = ServiceShape(name="big-iowa-dev", region="us-central1", model="big", cpu=4.0, memory_gib=16.0, gpus=1,
                   min_instances=1, max_instances=3, request_based=False, gpu_zonal_redundancy=True)


def test_a_gpu_services_inputs_are_billed_for_its_l4_warm_instance_and_zonal_redundancy(tmp_path):
    """Every field `fleet cost` reads from a GPU service's inputs lands where it is billed: with every price distinct,
    a field read from the wrong input (min for max instances, the L4 price without its redundancy) changes the cost."""
    assert service_shape("big-iowa", gpu_inputs()) == BIG
    without = gpu_inputs(gpuZonalRedundancyDisabled=True)
    assert service_shape("big-iowa", without) == replace(BIG, gpu_zonal_redundancy=False)
    book, catalog = distinct_book(tmp_path), load_catalog(PROJECT_DIR / "regions.yaml")
    # 3 requests/s of 2 s need 6 busy instances: 3 allowed, 1 of them warm. Tier 1, one-hour month:
    # 4 x 0.031 + 16 x 0.037 + the zonal-redundant L4 0.043 = 0.759 a second (0.757 with the plain L4 at 0.041)
    redundant, plain = price_services([service_shape("big-iowa", gpu_inputs()), service_shape("big-iowa", without)],
                                      catalog, book, Traffic(requests_per_second=3, latency_ms=2000))
    assert (redundant.always_on, redundant.traffic, redundant.capped) == (pytest.approx(0.759 * 3600),
                                                                          pytest.approx(2 * 3600 * 0.759), True)
    assert (plain.always_on, plain.traffic) == (pytest.approx(0.757 * 3600), pytest.approx(2 * 3600 * 0.757))


def test_a_services_inputs_left_out_are_cloud_runs_defaults():
    """A service that sets no limits, scaling or cpuIdle is billed as Cloud Run runs it: 1 vCPU, 512 MiB, request-
    based, 0 to 100 instances, no GPU; its logical name when it has no name, and 'shared' or '-' without a model."""
    bare = {"location": "asia-northeast1", "labels": {"role": "shared"}, "template": {"containers": [{}]}}
    assert service_shape("shared-tokyo", bare) == ServiceShape(
        name="shared-tokyo", region="asia-northeast1", model="shared", cpu=1.0, memory_gib=0.5, gpus=0,
        min_instances=0, max_instances=100, request_based=True, gpu_zonal_redundancy=False)
    assert service_shape("x", {**bare, "labels": {"role": "dedicated"}}).model == "-"
    assert service_shape("x", {**bare, "labels": None}).model == "-"
    # a GPU service that leaves out gpuZonalRedundancyDisabled keeps Cloud Run's default: redundancy on
    gpu = gpu_inputs()
    del gpu["template"]["gpuZonalRedundancyDisabled"]
    assert service_shape("big-iowa", gpu).gpu_zonal_redundancy


@pytest.mark.parametrize("path", [("containers", 0, "resources"), ("containers", 0, "resources", "limits"),
                                  ("containers", 0, "resources", "limits", "nvidia.com/gpu"),
                                  ("containers", 0, "resources", "cpuIdle"), ("scaling", "minInstanceCount"),
                                  ("scaling", "maxInstanceCount"), ("gpuZonalRedundancyDisabled",)])
def test_a_shape_unknown_during_preview_is_not_priced(path):
    """The budget check reads inputs through the policy pack's proxy: a value computed during the update (here one
    the shape depends on) leaves the service unpriced rather than priced at a guess; all known, it is priced."""
    props = gpu_inputs()
    assert service_shape("big-iowa", unknown_checking_proxy(copy.deepcopy(props))) == BIG
    node = props["template"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = UNKNOWN_NUMBER_VALUE
    assert service_shape("big-iowa", unknown_checking_proxy(props)) is None


def armor(rules: object) -> tuple[str, str, dict]:
    return SECURITY_POLICY, "armor", {"name": "armor", "rules": rules}


def run_service(name: str, *volumes: dict) -> tuple[str, str, dict]:
    return CLOUD_RUN_SERVICE, name, {"template": {"volumes": list(volumes)} if volumes else {}}


KEYS = {"name": "api-keys", "secret": {"secret": "keys"}}
TENANTS = {"name": "tenants", "secret": {"secret": "tenants"}}
# A stack-wide resource list in the plan's form: a GPU image beside the CPU one, two Cloud Armor policies, secrets
# with automatic and user-managed replication, and an IAM grant naming one secret by its short id.
RESOURCES = [
    (IMAGE, "server-image-gpu", {"buildArgs": {"RUNTIME": "gpu"}}),
    (IMAGE, "server-image", {"buildArgs": {"RUNTIME": "cpu"}}),
    armor([{"priority": 1000}, {"priority": 2000}, {"priority": 2147483647}]), armor(None),
    (SECRET, "keys", {"project": "p", "secretId": "keys", "replication": {"userManaged": {"replicas": [
        {"location": "us-east1"}, {"location": "europe-west1"}, {"location": "asia-east1"}]}}}),
    (SECRET, "tenants", {"project": "p", "secretId": "tenants", "replication": {"auto": {}}}),
    ("gcp:secretmanager/secretIamMember:SecretIamMember", "keys-reader", {"project": "p", "secretId": "keys"}),
    (SECRET_VERSION, "keys", {"secret": "projects/p/secrets/keys"}),
    (SECRET_VERSION, "tenants", {"secret": "projects/p/secrets/tenants"}),
    (SECRET_VERSION, "other", {"secret": "projects/p/secrets/elsewhere"}),  # its secret not in the plan: 1
    run_service("demo-iowa", KEYS, {"name": "scratch", "emptyDir": {}}), run_service("shared-iowa", KEYS, TENANTS),
    run_service("bare"),
]


def test_platform_shape_counts_the_gpu_image_armor_rules_secret_locations_and_mounts():
    assert platform_shape(RESOURCES) == PlatformShape(
        forwarding_rules=0, balanced_services=0, repositories=0, secret_version_locations=3 + 1 + 1, secret_mounts=3,
        gpu_image=True, security_policies=2, security_rules=3 + 1)  # a policy listing no rules has its default one
    assert not platform_shape([r for r in RESOURCES if r[1] != "server-image-gpu"]).gpu_image


def test_the_budget_check_counts_the_platform_as_fleet_cost_does():
    """The policy pack hands platform_shape proxies of the inputs, not lists and dicts: the same resources count the
    same, so the monthly-budget check and `fleet cost` agree on the always-on secret versions."""
    proxied = [(typ, name, unknown_checking_proxy(copy.deepcopy(props))) for typ, name, props in RESOURCES]
    assert platform_shape(proxied) == platform_shape(RESOURCES)
    # during a preview, a version of a secret created in the same update (its id unknown) counts one location, as
    # does one of a secret whose replicas are unknown, and a security policy whose rules are unknown counts one rule
    unknown = [(SECRET_VERSION, "new", {"secret": UNKNOWN_STRING_VALUE}), armor(UNKNOWN_STRING_VALUE),
               (SECRET, "keys", {"project": "p", "secretId": "keys",
                                 "replication": {"userManaged": {"replicas": UNKNOWN_ARRAY_VALUE}}}),
               (SECRET_VERSION, "keys", {"secret": "projects/p/secrets/keys"})]
    assert platform_shape((t, n, unknown_checking_proxy(p)) for t, n, p in unknown) == PlatformShape(
        secret_version_locations=2, security_policies=1, security_rules=1)


def test_the_gpu_image_is_stored_at_its_own_size(tmp_path):
    [line] = price_platform(PlatformShape(repositories=3, gpu_image=True), distinct_book(tmp_path))
    assert line.always_on == pytest.approx(3 * (0.4 + 2.4) * 1.07)  # 3 repositories x 2.8 GB x registry_storage
    assert line.quantity == "3 repositories x 0.4 GB image + 2.4 GB GPU image"


def test_a_region_without_a_tier_or_a_price_is_named_with_the_file_to_fix(tmp_path):
    """A service in a region the catalog lacks, or in a tier the price file lacks, stops `fleet cost` with a message
    naming the service or region, and the price file to edit."""
    book, catalog = distinct_book(tmp_path), load_catalog(PROJECT_DIR / "regions.yaml")
    with pytest.raises(PriceError, match=r"^gpu-mars-north1: region mars-north1 is not in the catalog, so its "
                                         r"pricing tier is unknown$"):
        price_services([gpu_shape("mars-north1")], catalog, book)
    tier1_only = book.model_copy(update={"tiers": {1: book.tiers[1]}})
    where = re.escape(str(tmp_path / "prices.yaml"))
    with pytest.raises(PriceError, match=rf"^{where}: no prices for pricing tier 2, which region asia-south1 is in; "
                                         r"add a '2:' entry under tiers"):
        price_services([gpu_shape("us-central1"), gpu_shape("asia-south1")], catalog, tier1_only)


def test_a_price_file_that_is_missing_or_not_a_mapping_says_so(tmp_path, capsys):
    prices = tmp_path / "prices.yaml"
    with pytest.raises(PriceError, match=f"^{re.escape(str(prices))}: cannot read it"):
        load_prices(prices)
    prices.write_text("- 0.000024\n- 0.0000025\n")
    expected = f"{prices}: expected a mapping with seconds_per_month and tiers"
    with pytest.raises(PriceError, match=f"^{re.escape(expected)}$"):
        load_prices(prices)
    prices.write_text("tiers: {1: [}\n")
    assert main(["cost", "--prices", str(prices)]) == 2, "a mistake in the file, not a traceback"
    assert f"{prices}: line 1, column 13: invalid YAML" in capsys.readouterr().err


def test_every_platform_line_says_what_it_counted_and_prices_it_exactly(tmp_path):
    """`fleet cost` prints each stack-wide line with what it counted; with distinct prices and a one-hour month, each
    total is the hand-computed one to the last digit a float keeps (a million is 1e6, not about a million). A re-check
    every second still caps the secret reads at one a second per mount, below the 50 requests a second."""
    shape = PlatformShape(forwarding_rules=7, balanced_services=3, repositories=2, secret_version_locations=4,
                          secret_mounts=5, security_policies=1, security_rules=3)
    traffic = Traffic(requests_per_second=50, latency_ms=100, request_kib=64, response_kib=3, secrets_recheck_seconds=1)
    lines = price_platform(shape, distinct_book(tmp_path), traffic)
    exact = {"rel": 1e-12}
    inbound, outbound = 3 * 180_000 * 64 / 2**20, 3 * 180_000 * 3 / 2**20  # GiB: 3 services x 180,000 requests
    assert [(line.item, line.quantity, line.always_on, line.traffic) for line in lines] == [
        ("load balancer forwarding rules", "7 rule(s), 1 h", pytest.approx(0.89 + 2 * 0.97, **exact), 0.0),
        ("load balancer data processed", "33.0 GiB in, 1.5 GiB out (3 service(s))", 0.0,
         pytest.approx(inbound * 1.01 + outbound * 1.03, **exact)),
        ("Cloud Armor", "1 policy, 3 rules, 0.5M requests evaluated", pytest.approx(1.17 + 3 * 1.19, **exact),
         pytest.approx(0.54 * 1.23, **exact)),
        ("Artifact Registry storage", "2 repositories x 0.4 GB image", pytest.approx(2 * 0.4 * 1.07, **exact), 0.0),
        ("Secret Manager versions", "4 active version-location(s)", pytest.approx(4 * 1.09, **exact), 0.0),
        ("Secret Manager access operations", "18,000 reads (5 mounted secret(s), at most one per 1 s while serving)",
         0.0, pytest.approx(1.8 * 1.13, **exact)),
    ]


def test_request_based_traffic_pays_per_million_requests_exactly(tmp_path):
    """Tier 2, 1 vCPU and 2 GiB, 2.5 requests/s of 100 ms for a one-hour month: 900 busy seconds at the request
    rates and 9,000 requests at the tier's price per million."""
    [cost] = price_services([replace(IOWA, region="asia-south1", cpu=1, memory_gib=2, min_instances=0)],
                            load_catalog(PROJECT_DIR / "regions.yaml"), distinct_book(tmp_path),
                            Traffic(requests_per_second=2.5, latency_ms=100))
    assert (cost.tier, cost.geography, cost.always_on) == (2, "asia-pacific", 0.0)
    assert cost.traffic == pytest.approx(900 * (0.047 + 2 * 0.053) + 9000 / 1e6 * 67.0, rel=1e-12)


@pytest.mark.parametrize(("flag", "value"), [("--requests-per-second", "nan"), ("--latency-ms", "inf"),
                                             ("--request-kib", "inf")])
def test_a_figure_no_traffic_has_exits_2_not_a_nan_total(capsys, flag: str, value: str):
    """float() takes nan and inf: priced, they made `$nan/month` and a --json that is not JSON (NaN)."""
    assert main(["cost", "--stack", "dev", flag, value, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"fleet cost: {flag} {value}: give a finite number\n"


def test_a_figure_beyond_what_a_service_can_see_exits_2_not_an_infinite_total(capsys):
    assert main(["cost", "--stack", "dev", "--requests-per-second", "1e308", "--json"]) == 2
    assert capsys.readouterr().err == ("fleet cost: --requests-per-second 1e+308 is over 1e+06 (requests per second on "
                                       "one service)\n")
