"""Project quotas a plan must fit: service accounts (IAM, 100 per project by default) stop the plan with exit
2; Cloud Run GPUs per region (0 until requested) are the `gpu-quota` policy's, exact at the threshold."""

from __future__ import annotations

import pytest

from components.errors import FleetError
from fleet.cli import main
from tests.stacks import (
    GPU_REGIONS,
    GPU_SETTINGS,
    THREE_MODELS,
    full_config,
    plan_stack,
    policy_violations,
    three_models_everywhere,
)

ACCOUNT = "gcp:serviceaccount/account:Account"
SERVICE = "gcp:cloudrunv2/service:Service"


def test_three_models_in_every_region_fit_the_default_service_account_quota():
    plan = plan_stack("prod", three_models_everywhere())
    dedicated = [r for r in plan.custom(SERVICE) if r.inputs["template"]["labels"]["role"] == "dedicated"]
    assert len(dedicated) == 129
    accounts = plan.custom(ACCOUNT)
    assert len(accounts) == 6 <= 100, "one per model, one per shared region"
    by_model: dict[str, set[str]] = {}
    for r in dedicated:
        by_model.setdefault(r.inputs["template"]["labels"]["model"], set()).add(r.inputs["template"]["serviceAccount"])
    assert all(len(emails) == 1 for emails in by_model.values()), "a model's endpoints share its account"
    assert len(set().union(*by_model.values())) == 3, "no two models share one"


def test_a_plan_needing_more_accounts_than_the_quota_stops_naming_it():
    """Accounts count per model, not per endpoint: three models in one region each need as many as everywhere."""
    config = full_config([{"name": name, "regions": ["us-east1"]} for name in THREE_MODELS])
    plan_stack("prod", {**config, "yolo-fleet:service_account_quota": "6"})  # exactly the quota: fine
    with pytest.raises(FleetError) as info:
        plan_stack("prod", {**config, "yolo-fleet:service_account_quota": "5"})
    message = str(info.value)
    for expected in ("needs 6 service accounts", "quota is 5", "iam.googleapis.com",
                     "service accounts per project, default 100", "yolo-fleet:service_account_quota",
                     "IAM & Admin > Quotas"):
        assert expected in message


def test_fleet_plan_exits_2_over_the_service_account_quota(monkeypatch, capsys):
    config = {**three_models_everywhere(), "yolo-fleet:service_account_quota": "5"}
    monkeypatch.setattr("fleet.program.stack_config", lambda stack, project_dir=None: dict(config))
    assert main(["plan", "--stack", "prod"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "needs 6 service accounts" in err and "Traceback" not in err


def gpu_config(quota: int, second: dict | None = None) -> dict[str, str]:
    """The full config's GPU model (max_instances 3 in each GPU region), plus `second` GPU model in Iowa."""
    models = [{"name": "gpu", "regions": GPU_REGIONS, "settings": GPU_SETTINGS}]
    if second:
        models.append({"name": "gpu-b", "regions": ["us-central1"], "settings": {**GPU_SETTINGS, **second}})
    return full_config(models, gpu_quota_per_region=quota)


def gpu_violations(config: dict[str, str]) -> list[str]:
    plan = plan_stack("gpu", config)
    return [v.message for v in policy_violations("gpu", plan.resources, config) if v.policy == "gpu-quota"]


def test_gpu_quota_per_region_passes_at_the_limit_and_fails_one_over():
    assert gpu_violations(gpu_config(5, second={"max_instances": 2})) == []  # Iowa: 3 + 2 = 5
    over = gpu_violations(gpu_config(4, second={"max_instances": 2}))
    assert len(over) == 1, "only Iowa is over: Eemshaven needs 3"
    assert over[0].startswith("us-central1: the GPU services may scale to 5 nvidia-l4 GPUs")
    assert "quota there is 4" in over[0] and "Total Nvidia L4 GPU allocation, per project per region" in over[0]
    assert "yolo-fleet:gpu_quota_per_region" in over[0]


def test_without_a_gpu_quota_setting_any_gpu_service_is_over_and_cpu_services_never_count():
    config = gpu_config(0)
    del config["yolo-fleet:gpu_quota_per_region"]  # the default: a new project has no GPU quota
    assert {m.split(":")[0] for m in gpu_violations(config)} == set(GPU_REGIONS)
    cpu_in_gpu_regions = full_config([{"name": "demo", "regions": GPU_REGIONS}], gpu_quota_per_region=0)
    assert gpu_violations(cpu_in_gpu_regions) == []


def test_fleet_policy_reports_the_gpu_quota(monkeypatch, capsys):
    config = gpu_config(2)
    monkeypatch.setattr("fleet.program.stack_config", lambda stack, project_dir=None: dict(config))
    assert main(["policy", "--stack", "gpu"]) == 1
    out = capsys.readouterr().out
    assert "gpu-quota" in out and "mandatory" in out and "europe-west4: the GPU services may scale to 3" in out
