"""Stacks for tests that need more than Pulumi.prod.yaml and Pulumi.dev.yaml: awkward stack names, and a
config under which the program declares every resource type it can (shared tenants behind the balancer, a
host per model and per endpoint on it, a GPU model, SLOs, notification channels, warm instances with uptime checks).

`plan_stack` plans the real program for any stack name without a Pulumi.<stack>.yaml on disk.
"""

from __future__ import annotations

import json
from typing import Any

from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.program import Plan, evaluate
from policy.config import load_pack_config
from policy.facts import load_facts

# Legal Pulumi stack names (letters, digits, '-', '_', '.', at most 100 characters) that no API takes as is.
LONG_STACK = ("Stg.EU_1." + "Region_Team.Cluster-" * 5)[:99] + "Z"
AWKWARD_STACKS = ("Stg.EU_1", LONG_STACK, "a", "Prod", "x_y.z-9")
PROJECT = "yolo-fleet-test-1"
DIGEST = "ab" * 32
GPU_REGIONS = ["us-central1", "europe-west4"]
GPU_SETTINGS = {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False, "max_instances": 3}
LONG_MODEL = "a-very-long-model-name-x"  # 24 characters: the longest a model name may be
# The full config's demo model: the shared (and tenants') regions, the longest city name (Northern Virginia), a city
# written with accents (São Paulo) and the regions whose images come from another geography's registry (Tel Aviv,
# Johannesburg). Names and labels vary by region only through these: every region is planned by the stock prod stack
# (tests/components/test_names.py checks its names too), and 7 endpoints instead of 43 plan in a fraction of the time.
DEMO_REGIONS = ["us-central1", "europe-west1", "asia-east1", "us-east4", "southamerica-east1", "me-west1",
                "africa-south1"]
# Three models of the longest name (24 characters) in every region: the largest fleet the tests plan.
THREE_MODELS = [f"{kind}-{'x' * (24 - len(kind) - 1)}" for kind in ("detect", "segment", "pose")]


def full_config(models: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, str]:
    """Config values as Pulumi hands them to the program (strings, JSON for structures)."""
    values: dict[str, Any] = {
        "gcp:project": PROJECT,
        "yolo-fleet:models": models if models is not None else [
            {"name": "demo", "regions": DEMO_REGIONS},
            {"name": LONG_MODEL, "regions": ["asia-east1", "northamerica-northeast2", "europe-southwest1"]},
            {"name": "gpu", "regions": GPU_REGIONS, "settings": GPU_SETTINGS},
        ],
        "yolo-fleet:api_key_sha256": [DIGEST],
        "yolo-fleet:shared_domain": "inference.yolo-fleet-test.dev",
        "yolo-fleet:domain": "models.yolo-fleet-test.dev",  # a host per model and per endpoint (issue 14)
        "yolo-fleet:tenants": {"acme": {"data_region": "us-central1", "key_sha256": [DIGEST]},
                               "globex": {"data_region": "europe-west1", "key_sha256": [DIGEST]}},
        "yolo-fleet:slo": {"enabled": True},
        "yolo-fleet:notification_channels": [
            {"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@yolo-fleet-test.dev"}}],
        "yolo-fleet:gpu_quota_per_region": 3,
        **{f"yolo-fleet:{k}": v for k, v in extra.items()},
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def three_models_everywhere() -> dict[str, str]:
    """Three models in all 43 regions (129 endpoints) plus the shared services."""
    return full_config([{"name": n, "regions": "all"} for n in THREE_MODELS])


def plan_stack(stack: str, config: dict[str, str] | None = None) -> Plan:
    """The real program's plan for `stack` under `config` (default: `full_config()`)."""
    return evaluate(stack, config=config if config is not None else full_config())


def policy_violations(stack: str, resources: list[RecordedResource],
                      config: dict[str, str] | None = None) -> list[Violation]:
    """What `fleet policy` would report for these resources of `stack` under `config`."""
    facts = load_facts(stack, config=config if config is not None else full_config())
    return run_policies(resources, facts, load_pack_config())
