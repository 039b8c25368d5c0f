"""The plan and the server share one settings class (inference_service/settings.py): every variable a planned
service gets is one the server reads, and it reads back the value the plan meant."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleet.program import PROJECT_DIR, Plan
from inference_service.settings import ServerSettings, env_name, service_env

SERVICE = "gcp:cloudrunv2/service:Service"
SERVER_ENV = {env_name(field) for field in ServerSettings.model_fields}


def planned_env(service: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in service["template"]["containers"][0]["envs"]}


def test_every_planned_variable_is_a_setting_the_server_reads(prod_plan: Plan, dev_plan: Plan,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    services = [r.inputs for plan in (prod_plan, dev_plan) for r in plan.custom(SERVICE)]
    assert {s["template"]["labels"]["role"] for s in services} == {"dedicated", "shared"}
    for service in services:
        env = planned_env(service)
        assert set(env) <= SERVER_ENV, f"{service['name']}: read by no server setting: {set(env) - SERVER_ENV}"
        for name in SERVER_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        server = ServerSettings()  # what the server makes of this environment
        template = service["template"]
        assert server.max_concurrency == template["maxInstanceRequestConcurrency"]
        assert f"{server.request_timeout:g}s" == template["timeout"]
        assert server.ort_threads == int(template["containers"][0]["resources"]["limits"]["cpu"])
        if template["labels"]["role"] == "shared":
            assert server.mode == "shared" and server.region == service["location"]
            assert server.region in server.shared_regions and server.region not in server.peers
            assert set(server.peers) == set(server.shared_regions) - {server.region}
        else:
            assert server.mode == "dedicated" and server.model_path and server.model_path.suffix == ".onnx"


def test_the_shared_services_get_the_catalogs_shared_regions(prod_plan: Plan, catalog_data: dict) -> None:
    shared = [r.inputs for r in prod_plan.custom(SERVICE) if r.inputs["template"]["labels"]["role"] == "shared"]
    assert len(shared) == len(catalog_data["shared"]["regions"])
    for service in shared:
        assert planned_env(service)["SHARED_REGIONS"].split(",") == catalog_data["shared"]["regions"]


def test_a_misspelt_or_refused_setting_stops_the_plan_not_the_server() -> None:
    with pytest.raises(ValueError, match="max_concurency: not a server setting"):
        service_env(model_path="/app/m.onnx", max_concurency=4)
    with pytest.raises(ValueError, match=r"--request-timeout \(REQUEST_TIMEOUT\): invalid value 0"):
        service_env(model_path="/app/m.onnx", request_timeout=0)
    with pytest.raises(ValueError, match="'me-west1' is not a shared region"):
        service_env(mode="shared", models_dir="/models", tenants_file="/t.yaml", region="me-west1",
                    shared_regions=["us-central1"])
    assert service_env(model_path="/app/m.onnx", model_name=None, request_timeout=60.0, allow_anonymous=False) == {
        "MODEL_PATH": "/app/m.onnx", "REQUEST_TIMEOUT": "60", "ALLOW_ANONYMOUS": "false"}


def test_every_setting_says_what_it_is_for() -> None:
    """The descriptions are the settings' documentation (``--help``, the README's table)."""
    undocumented = [name for name, field in ServerSettings.model_fields.items() if not field.description]
    assert not undocumented


def test_the_plan_imports_no_server_runtime() -> None:
    """components/ build the environment from the settings class without loading onnxruntime or FastAPI."""
    code = ("import sys, components.service, components.shared, components.endpoint; "
            "print(sorted(m for m in ('onnxruntime', 'fastapi', 'numpy', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR, check=True)
    assert out.stdout.strip() == "[]"


def test_the_images_own_environment_is_server_settings() -> None:
    """The Dockerfile's ENV defaults (PORT, MODEL_PATH, SAMPLES_DIR) are settings the server reads."""
    dockerfile = (PROJECT_DIR / "inference_service" / "Dockerfile").read_text()
    block = dockerfile.split("\nENV ", 1)[1].split("\n\n", 1)[0]
    names = {line.strip().split("=", 1)[0] for line in block.replace("\\\n", "\n").splitlines() if "=" in line}
    server = {n for n in names if not n.startswith(("PYTHON", "PIP_")) and n != "HOME"}  # Python's, pip's, ~
    assert server == {"PORT", "MODEL_PATH", "SAMPLES_DIR"} and server <= SERVER_ENV
