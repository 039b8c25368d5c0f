"""The cost model on hand-computed cases, and `fleet cost` on the real plans."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from fleet.cli import main
from fleet.pricing import (
    DEFAULT_PRICES,
    ServiceShape,
    Traffic,
    always_on_monthly,
    load_prices,
    service_shape,
    traffic_monthly,
)

BOOK = load_prices()
MONTH = 730 * 3600  # seconds_per_month in fleet/prices.yaml
TIER1, TIER2 = BOOK.tiers[1], BOOK.tiers[2]
# demo-iowa as prod plans it: 2 vCPU, 4 GiB, one warm instance, request-based billing.
IOWA = ServiceShape(name="demo-iowa", region="us-central1", model="demo", cpu=2, memory_gib=4, gpus=0,
                    min_instances=1, max_instances=10, request_based=True, gpu_zonal_redundancy=False)


def test_price_file_has_a_source_and_date_beside_every_price():
    data = yaml.safe_load(DEFAULT_PRICES.read_text())
    assert BOOK.seconds_per_month == MONTH
    for tier in data["tiers"].values():
        for price in tier.values():
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
    assert report["total"]["always_on"] == pytest.approx(39.42 + 3 * 78.84)
    assert report["by_region"]["us-central1"]["always_on"] == pytest.approx(39.42 + 78.84)
    assert report["by_model"]["shared"] == {"services": 3, "always_on": 236.52, "traffic": pytest.approx(94.61),
                                            "total": pytest.approx(331.13)}
    assert sum(g["services"] for g in report["by_geography"].values()) == 46
    assert report["by_geography"]["americas"]["services"] == 15  # 14 regions + shared-iowa
    assert sum(g["total"] for g in report["by_geography"].values()) == pytest.approx(report["total"]["total"], abs=0.1)
    assert report["assumptions"]["requests_per_second_per_service"] == 1.0


def test_fleet_cost_traffic_follows_the_assumed_rate(capsys):
    assert main(["cost", "--stack", "dev", "--json", "--requests-per-second", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == {"always_on": 0, "traffic": 0, "total": 0}
    assert main(["cost", "--stack", "dev", "--requests-per-second", "2", "--latency-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "at 2 requests/s per service, 50 ms each" in out
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
