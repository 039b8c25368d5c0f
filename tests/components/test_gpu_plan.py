"""GPU services in the plan (under mocks): the GPU image is built and run only where a service asks for a GPU, with
the L4's node selector and limits, Cloud Run's cpu/memory/cpu_idle rules, the catalog's GPU defaults, and
max_instances fitted to the stack's GPU quota per region."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

import pytest

from components.catalog import CatalogError, load_catalog
from components.errors import FleetError
from components.image import GPU_IMAGE_NAME, IMAGE_NAME, RUNTIME_ARG
from fleet import build_image
from fleet.pricing import GPU_IMAGE_SIZE_GB, IMAGE_SIZE_GB, PlatformCost, load_prices, platform_shape, price_platform
from fleet.program import CLOUD_RUN, PROJECT_DIR, Plan, evaluate
from tests.conftest import deployable

IMAGE = "docker-build:index:Image"
GPU_REGIONS = ["us-central1", "europe-west4"]
DIGEST = "sha256:" + "c" * 64


def plan_with(models: list[dict[str, Any]], settings: dict[str, Any] | None = None, **config: Any) -> Plan:
    """The dev stack (deployable) with these models and stack-wide settings (none by default: dev's own say cpu 1
    and 2Gi, and force max_instances 2 on every service)."""
    overrides = {**deployable("dev"), "yolo-fleet:models": json.dumps(models),
                 "yolo-fleet:settings": json.dumps(settings or {}), "yolo-fleet:forced_settings": "{}",
                 **{f"yolo-fleet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}}
    return evaluate("dev", config_overrides=overrides)


def services(plan: Plan) -> dict[str, dict[str, Any]]:
    """Cloud Run services by logical name: their template."""
    return {s.name: s.inputs["template"] for s in plan.custom(CLOUD_RUN)}


def envs(template: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in template["containers"][0]["envs"]}


# `gpu: true` alone: the catalog's GPU defaults make the rest.
GPU_MODEL = {"name": "big", "regions": GPU_REGIONS, "settings": {"gpu": True}}
CPU_MODEL = {"name": "demo", "regions": ["us-central1", "asia-northeast1"]}


@pytest.fixture(scope="module")
def mixed_plan() -> Plan:
    return plan_with([CPU_MODEL, GPU_MODEL], gpu_quota_per_region=3)


def test_the_gpu_image_is_built_beside_the_cpu_one_and_only_gpu_services_run_it(mixed_plan: Plan) -> None:
    images = {i.name: i.inputs for i in mixed_plan.custom(IMAGE)}
    assert set(images) == {"server-image", "server-image-gpu"}
    assert images["server-image"]["buildArgs"][RUNTIME_ARG] == "cpu"
    assert images["server-image-gpu"]["buildArgs"][RUNTIME_ARG] == "gpu"
    assert images["server-image-gpu"]["buildArgs"]["MODEL_FILES"] == images["server-image"]["buildArgs"]["MODEL_FILES"]
    assert all(f"/{GPU_IMAGE_NAME}:" in tag for tag in images["server-image-gpu"]["tags"])
    gpu_digest, cpu_digest = mixed_plan.outputs["gpu_image_digest"], mixed_plan.outputs["image_digest"]
    assert gpu_digest != cpu_digest
    run = services(mixed_plan)
    for name in ("big-iowa", "big-eemshaven"):
        assert run[name]["containers"][0]["image"].endswith(f"/{GPU_IMAGE_NAME}@{gpu_digest}"), name
    for name in ("demo-iowa", "demo-tokyo", "shared-iowa"):
        assert run[name]["containers"][0]["image"].endswith(f"/{IMAGE_NAME}@{cpu_digest}"), name


def test_gpu_services_get_an_l4_its_minimum_shape_cpu_always_on_and_device_cuda(mixed_plan: Plan) -> None:
    run = services(mixed_plan)
    for name in ("big-iowa", "big-eemshaven"):
        t, container = run[name], run[name]["containers"][0]
        assert t["nodeSelector"] == {"accelerator": "nvidia-l4"}
        assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
        assert container["resources"]["cpuIdle"] is False, "Cloud Run GPU services: CPU always allocated"
        assert t["maxInstanceRequestConcurrency"] == 16 and envs(t)["MAX_CONCURRENCY"] == "16", "gpu_defaults"
        assert envs(t)["DEVICE"] == "cuda" and envs(t)["ORT_THREADS"] == "4"
    # The catalog's region overrides are tuned for CPU services: Iowa's warm instance and Eemshaven's 20 instances
    # are not an L4 kept warm (~$760/month) or 20 L4s; the GPU defaults win over them.
    assert run["demo-iowa"]["scaling"]["minInstanceCount"] == 1 and run["big-iowa"]["scaling"]["minInstanceCount"] == 0
    assert run["big-eemshaven"]["scaling"]["maxInstanceCount"] == 3
    for name in ("demo-iowa", "shared-iowa"):
        t = run[name]
        assert "nodeSelector" not in t and "nvidia.com/gpu" not in t["containers"][0]["resources"]["limits"]
        assert envs(t)["DEVICE"] == "cpu"


def test_a_stacks_plain_settings_do_not_shrink_a_gpu_service_below_an_l4() -> None:
    plan = plan_with([{"name": "big", "regions": ["us-central1"], "settings": {"gpu": True}}],
                     {"cpu": 1, "memory": "2Gi"})
    limits = services(plan)["big-iowa"]["containers"][0]["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == ("4", "16Gi")


def test_a_cpu_only_stack_builds_and_exports_no_gpu_image(prod_plan: Plan) -> None:
    [image] = prod_plan.custom(IMAGE)
    assert image.inputs["buildArgs"][RUNTIME_ARG] == "cpu"
    assert "gpu_image_digest" not in prod_plan.outputs
    assert {envs(t)["DEVICE"] for t in services(prod_plan).values()} == {"cpu"}


@pytest.mark.parametrize(("forced", "settings", "expected"), [
    ({"cpu": 1, "memory": "2Gi"}, {"gpu": True}, "gpu needs cpu >= 4 and memory >= 16Gi (got cpu 1, memory 2Gi)"),
    ({}, {"gpu": True, "cpu_idle": True}, "gpu needs cpu_idle: false"),
    ({}, {"gpu": True, "memory": "8Gi"}, "gpu needs cpu >= 4 and memory >= 16Gi (got cpu 4, memory 8Gi)"),
    ({}, {"gpu": True, "cpu": 2}, "gpu needs cpu >= 4 and memory >= 16Gi (got cpu 2, memory 16Gi)"),  # not "cpu 2
    # allows at most 8Gi", which sends the user to lower the memory the GPU needs
])
def test_cloud_run_gpu_rules_stop_the_plan_naming_the_endpoint(forced: dict[str, Any],
                                                               settings: dict[str, Any], expected: str) -> None:
    """Model and forced settings win over the catalog's GPU defaults, so one that breaks Cloud Run's GPU rules
    stops the plan (a stack's plain `settings` only fill gaps: the GPU defaults beat them)."""
    with pytest.raises(FleetError) as info:
        plan_with([{"name": "big", "regions": ["us-central1"], "settings": settings}], forced_settings=forced)
    assert "models[big] in regions[us-central1]" in str(info.value) and expected in str(info.value)


def max_instances(plan: Plan) -> dict[str, int]:
    return {name: t["scaling"]["maxInstanceCount"] for name, t in services(plan).items()
            if "nodeSelector" in t}


def test_gpu_max_instances_default_is_fitted_to_the_quota_per_region() -> None:
    second = {"name": "big-b", "regions": ["us-central1"], "settings": GPU_MODEL["settings"]}
    # Iowa: two GPU services share 3 (2 + 1); Eemshaven: one gets the catalog's 3.
    assert max_instances(plan_with([GPU_MODEL, second], gpu_quota_per_region=3)) == {
        "big-iowa": 2, "big-b-iowa": 1, "big-eemshaven": 3}
    # A big quota: the catalog's default (3) is the most, not the quota.
    assert set(max_instances(plan_with([GPU_MODEL, second], gpu_quota_per_region=50)).values()) == {3}
    # An explicit max_instances is kept and counts first: 4 - 3 leaves 1 for the defaulted one in Iowa.
    pinned = {**second, "settings": {**second["settings"], "max_instances": 3}}
    assert max_instances(plan_with([GPU_MODEL, pinned], gpu_quota_per_region=4)) == {
        "big-iowa": 1, "big-b-iowa": 3, "big-eemshaven": 3}
    # No quota (a new project's 0): 1 each, and the gpu-quota policy tells what to request.
    assert set(max_instances(plan_with([GPU_MODEL], gpu_quota_per_region=0)).values()) == {1}


def test_the_catalog_gpu_defaults_must_make_a_valid_gpu_service(write_catalog) -> None:
    catalog = load_catalog(PROJECT_DIR / "regions.yaml")
    assert catalog.gpu_defaults.changes() == {"cpu": 4, "memory": "16Gi", "cpu_idle": False, "concurrency": 16,
                                              "max_instances": 3, "min_instances": 0}
    small = write_catalog(lambda d: d["gpu_defaults"].update(memory="8Gi"))
    with pytest.raises(CatalogError, match=r"regions\.yaml: gpu_defaults: gpu needs cpu >= 4 and memory >= 16Gi"):
        load_catalog(small)
    itself = write_catalog(lambda d: d["gpu_defaults"].update(gpu=True))
    with pytest.raises(CatalogError, match=r"gpu_defaults.*gpu_defaults apply to services that set gpu"):
        load_catalog(itself)


def test_a_prebuilt_cpu_image_needs_a_prebuilt_gpu_image_for_gpu_services() -> None:
    with pytest.raises(FleetError, match=r"image: a prebuilt CPU image, but big-iowa, big-eemshaven ask for a GPU; "
                                         r"set yolo-fleet:gpu_image"):
        plan_with([GPU_MODEL], image=f"europe-docker.pkg.dev/p/r/server@{DIGEST}")
    gpu_ref = "us-docker.pkg.dev/p/r/server-gpu@sha256:" + "d" * 64
    plan = plan_with([CPU_MODEL, GPU_MODEL], image=f"europe-docker.pkg.dev/p/r/server@{DIGEST}", gpu_image=gpu_ref,
                     gpu_quota_per_region=3)
    assert plan.custom(IMAGE) == [] and plan.custom("gcp:artifactregistry/repository:Repository") == []
    run = services(plan)
    assert run["big-iowa"]["containers"][0]["image"] == gpu_ref
    assert run["demo-iowa"]["containers"][0]["image"].endswith(DIGEST)


def test_the_gpu_image_is_priced_in_every_repository_only_when_built(mixed_plan: Plan, prod_plan: Plan) -> None:
    def storage(plan: Plan) -> PlatformCost:
        shape = platform_shape((r.type, r.name, r.inputs) for r in plan.custom())
        return next(line for line in price_platform(shape, load_prices()) if line.item == "Artifact Registry storage")

    gpu, cpu = storage(mixed_plan), storage(prod_plan)
    repositories = len(mixed_plan.custom("gcp:artifactregistry/repository:Repository"))
    assert gpu.quantity == (f"{repositories} repositories x {IMAGE_SIZE_GB:g} GB image + {GPU_IMAGE_SIZE_GB:g} GB "
                            "GPU image")
    per_gb = load_prices().platform.registry_storage_gb_month.usd
    assert gpu.always_on == pytest.approx(repositories * (IMAGE_SIZE_GB + GPU_IMAGE_SIZE_GB) * per_gb)
    assert "GPU" not in cpu.quantity


def test_make_image_runtime_gpu_builds_the_gpu_variant(monkeypatch) -> None:
    """`make image RUNTIME=gpu` passes RUNTIME=gpu to the same Dockerfile, tagged apart from the CPU image."""
    commands: list[list[str]] = []

    def run(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build_image.subprocess, "run", run)
    docker = build_image.Engine("docker", ("docker",))
    for runtime in ("gpu", "cpu"):
        build_image.build("dev", engine=docker, runtime=runtime, log=lambda _: None)
    gpu, cpu = commands
    assert f"{RUNTIME_ARG}=gpu" in gpu and gpu[gpu.index("-t") + 1] == f"{build_image.IMAGE}:dev-gpu"
    assert f"{RUNTIME_ARG}=cpu" in cpu and cpu[cpu.index("-t") + 1] == f"{build_image.IMAGE}:dev"


def test_the_printed_run_command_serves_a_model_the_image_holds(monkeypatch, capsys) -> None:
    """The Dockerfile's default MODEL_PATH is the demo's: an image of a stack without it must be run on its own."""
    docker = build_image.Engine("docker", ("docker",))
    built = build_image.BuildResult(docker, "img:solo", ["models/demo-raw.onnx", "models/other.onnx"], [], 1.0)
    monkeypatch.setattr(build_image, "build", lambda *_, **__: built)
    assert build_image.main(["--stack", "dev"]) == 0
    out = capsys.readouterr().out
    run, stop = out.splitlines()[-3], out.splitlines()[-1]
    assert "-e MODEL_PATH=/app/models/demo-raw.onnx" in run and run.strip().startswith("docker run --name ")
    assert stop.strip() == f"docker rm -f {build_image.RUN_NAME}"
    assert "run it on models/demo-raw.onnx (it holds models/other.onnx too: MODEL_PATH=/app/<file> serves another)" \
        in out


def test_podman_runs_the_printed_command_without_systemd_healthcheck_timers() -> None:
    podman = build_image.Engine("podman", ("podman", "--root", "/var/tmp/my store"),
                                {"CONTAINERS_CONF": "/var/tmp/my store.conf"})
    built = build_image.BuildResult(podman, "img:dev", ["models/demo-e2e.onnx"], [], 1.0)
    command = build_image.run_command(built)
    assert command.startswith("CONTAINERS_CONF='/var/tmp/my store.conf' podman --root '/var/tmp/my store' run --name "
                              f"{build_image.RUN_NAME} --no-healthcheck ")
    assert shlex.split(command)[0] == "CONTAINERS_CONF=/var/tmp/my store.conf", "an assignment the shell makes"


def test_two_models_sharing_a_file_put_it_in_the_image_once(tmp_path) -> None:
    import shutil

    import yaml

    (tmp_path / "models").mkdir()
    shutil.copy(PROJECT_DIR / "models" / "demo-e2e.onnx", tmp_path / "models" / "demo-e2e.onnx")
    stack = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    stack["config"]["yolo-fleet:models"] = [{"name": "a", "file": "models/demo-e2e.onnx"},
                                            {"name": "b", "file": "models/demo-e2e.onnx"}]
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack))
    assert build_image.stack_model_files("dev", tmp_path) == ["models/demo-e2e.onnx"]
