"""The planned image build (under mocks): it holds exactly the stack's model files, wherever they are in the
repository, and each endpoint's MODEL_PATH is where the Dockerfile puts its file."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.endpoint import model_path_in_image
from components.errors import FleetError
from components.image import MODEL_FILES_ARG, model_files_arg
from fleet.build_image import stack_model_files
from fleet.mocks import context_digest
from fleet.program import CLOUD_RUN, PROJECT_DIR, Plan, evaluate

IMAGE = "docker-build:index:Image"


def build_args(plan: Plan) -> dict[str, str]:
    [image] = plan.custom(IMAGE)
    return image.inputs["buildArgs"]


def named_files(plan: Plan) -> dict[str, str]:
    """{repository path: sha256} of the MODEL_FILES the build receives."""
    return {path: digest for digest, path in (line.split(None, 1) for line in build_args(plan)[MODEL_FILES_ARG]
                                              .splitlines())}


def model_paths(plan: Plan) -> dict[str, str]:
    """MODEL_PATH per dedicated endpoint (by its logical name: the Pulumi resource's)."""
    out = {}
    for service in plan.custom(CLOUD_RUN):
        envs = {e["name"]: e.get("value") for e in service.inputs["template"]["containers"][0]["envs"]}
        if "MODEL_PATH" in envs:
            out[service.name] = envs["MODEL_PATH"]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_build_names_only_the_stacks_model_files_with_their_digests(prod_plan: Plan, dev_plan: Plan) -> None:
    demo, raw = PROJECT_DIR / "models/demo-e2e.onnx", PROJECT_DIR / "models/demo-raw.onnx"
    assert named_files(prod_plan) == {"models/demo-e2e.onnx": sha256(demo)}, "prod does not carry the raw model"
    assert named_files(dev_plan) == {"models/demo-e2e.onnx": sha256(demo), "models/demo-raw.onnx": sha256(raw)}
    assert set(model_paths(prod_plan).values()) == {"/app/models/demo-e2e.onnx"}


@pytest.fixture
def nested_models() -> Iterator[list[str]]:
    """Copies of the demo model at the same basename in two folders of the repository (tests/artifacts/, which
    git ignores), as repository paths; removed afterwards."""
    root = PROJECT_DIR / "tests" / "artifacts" / "image-plan"
    files = ["tests/artifacts/image-plan/weights/a/demo.onnx", "tests/artifacts/image-plan/weights/b/demo.onnx"]
    for i, name in enumerate(files):
        (PROJECT_DIR / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / ("models/demo-e2e.onnx", "models/demo-raw.onnx")[i], PROJECT_DIR / name)
    yield files
    shutil.rmtree(root)


def test_models_in_subfolders_with_one_basename_get_distinct_paths_in_the_image(nested_models: list[str]) -> None:
    a, b = nested_models
    models = [{"name": "one", "file": a, "regions": ["us-central1"]},
              {"name": "two", "file": b, "regions": ["us-central1"]},
              {"name": "again", "file": f"./{a}", "regions": ["europe-west1"]}]  # the same file, spelled otherwise
    plan = evaluate("prod", config_overrides={"yolo-fleet:models": json.dumps(models)})
    paths = model_paths(plan)
    assert paths["one-iowa"] == f"/app/{a}" and paths["two-iowa"] == f"/app/{b}"
    assert paths["again-st-ghislain"] == paths["one-iowa"]
    assert named_files(plan) == {a: sha256(PROJECT_DIR / a), b: sha256(PROJECT_DIR / b)}, \
        "each file once, under its repository path; nothing from models/"
    assert {model_path_in_image(f) for f in named_files(plan)} == {paths["one-iowa"], paths["two-iowa"]}


def test_stand_in_digest_follows_named_model_files_only(tmp_path: Path) -> None:
    """The mocks' image digest changes with a model the stack names, not with another ONNX file in the repo."""
    (tmp_path / "inference_service").mkdir()
    (tmp_path / "inference_service" / "app.py").write_text("app = 1\n")
    (tmp_path / "models" / "samples").mkdir(parents=True)
    (tmp_path / "models" / "samples" / "a.jpg").write_bytes(b"jpeg")
    named, other = tmp_path / "models" / "named.onnx", tmp_path / "models" / "other.onnx"
    named.write_bytes(b"named v1")
    other.write_bytes(b"other v1")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")

    def digest() -> str:
        return context_digest(str(tmp_path), str(dockerfile),
                              {MODEL_FILES_ARG: model_files_arg(tmp_path, ["models/named.onnx"])})

    before = digest()
    other.write_bytes(b"other v2")
    assert digest() == before, "an ONNX file the stack does not name is not in the image"
    named.write_bytes(b"named v2")
    changed = digest()
    assert changed != before
    (tmp_path / "inference_service" / "app.py").write_text("app = 2\n")
    assert digest() != changed, "server code is in the image"


def test_make_image_refuses_a_model_file_the_plan_refuses(tmp_path: Path) -> None:
    """`make image` reads the stack's model files itself: a file that is not ONNX stops it as it stops the plan."""
    (tmp_path / "README.md").write_text("# not a model\n")
    (tmp_path / "Pulumi.odd.yaml").write_text(yaml.safe_dump({"config": {
        "gcp:project": "yolo-fleet-test-1", "yolo-fleet:api_key_sha256": ["ab" * 32],
        "yolo-fleet:models": [{"name": "demo", "file": "README.md", "regions": ["us-central1"]}]}}))
    with pytest.raises(FleetError, match=r"Pulumi\.odd\.yaml: models\[demo\]\.file: 'README\.md' is not an ONNX"):
        stack_model_files("odd", tmp_path)
