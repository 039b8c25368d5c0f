"""The real server image, built from inference_service/Dockerfile (`make image`'s code) and run as a container the
way Cloud Run runs it: non-root, a read-only root with a tmpfs /tmp, stopped by SIGTERM.

Marker `image`; part of `make test`. Without a Docker engine it needs podman, buildah and runc (and mmdebstrap
where the real bases cannot be pulled): missing tools fail the test with what to install, unless
YOLO_FLEET_SKIP_IMAGE=1 says to skip. A build on stand-in bases is reported as a warning in the summary.
One build and one container serve every test; both are removed afterwards (the layer cache stays).
"""

from __future__ import annotations

import json
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from components.endpoint import model_path_in_image
from fleet.build_image import STAND_IN_NOTE, BuildResult, Engine, ImageBuildError, build, find_engine
from tests.conftest import SKIP_IMAGE_ENV
from tests.helpers_server import MODELS, start_container, write_key_file

pytestmark = [pytest.mark.image, pytest.mark.slow]

STACK = "prod"
STOP_TIMEOUT_S = 10  # Cloud Run's grace period before SIGKILL
TELEMETRY_WARNING = "Failed to persist telemetry device ID"


class StandInBaseWarning(UserWarning):
    """The image under test was built on a stand-in base, not the Dockerfile's real one."""


@dataclass(frozen=True)
class Container:
    engine: Engine
    id: str
    url: str
    key: str
    model_path: str

    def exec(self, *args: str, user: str | None = None) -> tuple[int, str]:
        result = self.engine("exec", *(("--user", user) if user else ()), self.id, *args, check=False)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def image() -> Iterator[BuildResult]:
    tag = f"localhost/yolo-fleet-test/inference-server:{secrets.token_hex(4)}"
    try:
        engine = find_engine()
        result = build(STACK, tag, engine=engine, quiet=True, log=lambda _: None)
    except ImageBuildError as error:
        pytest.fail(f"{error}\n(or set {SKIP_IMAGE_ENV}=1 to skip the image tests)", pytrace=False)
    if result.stand_in_bases:
        warnings.warn(StandInBaseWarning(f"the image was built on a {STAND_IN_NOTE}: "
                                         f"{', '.join(result.stand_in_bases)} could not be pulled"), stacklevel=1)
    try:
        yield result
    finally:
        engine("rmi", tag, check=False)  # only this test's tag: the cached layers stay for the next build


@pytest.fixture(scope="module")
def container(image: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image running with a mounted key file, as uid 10001 reads it, on a free host port."""
    keys = tmp_path_factory.mktemp("image-secrets")
    key, key_file = write_key_file(keys)
    keys.chmod(0o755)
    key_file.chmod(0o644)
    model = model_path_in_image(image.model_files[0])
    try:
        cid, url, _ = start_container(image.engine, image.tag, keys, model)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield Container(image.engine, cid, url, key, model)
    finally:
        image.engine("rm", "-f", cid, check=False)


def logs(c: Container) -> str:
    result = c.engine("logs", c.id)
    return result.stdout + result.stderr


def test_health_is_200_and_ready(container: Container) -> None:
    r = httpx.get(f"{container.url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["healthy"] is True and r.json()["status"] == "ready"


def test_predict_of_a_sample_finds_shapes_with_the_right_key_only(container: Container) -> None:
    sample = (MODELS / "samples" / "shapes-1.jpg").read_bytes()
    r = httpx.post(f"{container.url}/predict", files={"file": ("shapes-1.jpg", sample, "image/jpeg")},
                   headers={"Authorization": f"Bearer {container.key}"}, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["images"][0]["results"]
    assert results and {d["name"] for d in results} <= {"circle", "square", "triangle"}, results
    assert httpx.post(f"{container.url}/predict", files={"file": sample}, timeout=30).status_code == 401
    wrong = httpx.post(f"{container.url}/predict", files={"file": sample}, timeout=30,
                       headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401


def test_the_server_runs_as_uid_10001(container: Container) -> None:
    code, out = container.exec("id", "-u")
    assert (code, out.strip()) == (0, "10001")
    code, status = container.exec("grep", "^Uid:", "/proc/1/status")
    assert code == 0 and status.split()[1:] == ["10001"] * 4, status


def test_root_is_read_only_and_tmp_is_writable(container: Container) -> None:
    code, out = container.exec("touch", "/app/probe", user="0")  # even root: the filesystem refuses, not a mode
    assert code != 0 and "Read-only file system" in out
    code, out = container.exec("touch", "/tmp/probe")
    assert code == 0, out


def test_start_up_log_is_clean(container: Container) -> None:
    text = logs(container)
    assert TELEMETRY_WARNING not in text, "HOME must be writable for uid 10001 under a read-only root"
    assert "letterbox=native+jpeg" in text, "the build stage's C kernel is loaded, and the libjpeg beside it"


def test_image_holds_exactly_the_stacks_models_and_the_samples(container: Container, image: BuildResult) -> None:
    probe = ("import glob, json, os; print(json.dumps([sorted(glob.glob('/app/**/*.onnx', recursive=True)), "
             "sorted(os.listdir(os.environ['SAMPLES_DIR']))]))")
    code, out = container.exec("python", "-c", probe)
    assert code == 0, out
    onnx, samples = json.loads(out)
    assert onnx == sorted({model_path_in_image(f) for f in image.model_files}), "no ONNX file the stack does not name"
    assert container.model_path in onnx
    assert samples == sorted(p.name for p in (MODELS / "samples").iterdir())
    assert httpx.get(f"{container.url}/info", timeout=5).json()["samples"], "the Test page offers the samples"


def test_the_images_healthcheck_passes(container: Container, image: BuildResult) -> None:
    check = json.loads(image.engine("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                                    image.tag).stdout)
    assert check["Test"][0] == "CMD"
    code, out = container.exec(*check["Test"][1:])
    assert code == 0, out


def test_sigterm_stops_it_with_exit_0_within_10_s(container: Container) -> None:
    """Last: it stops the module's container. A server that ignored SIGTERM would be killed at 10 s (137)."""
    started = time.monotonic()
    container.engine("stop", "-t", str(STOP_TIMEOUT_S), container.id, timeout=STOP_TIMEOUT_S + 30)
    elapsed = time.monotonic() - started
    state = container.engine("inspect", "--format", "{{.State.ExitCode}} {{.State.Running}}", container.id).stdout
    assert state.split() == ["0", "false"], f"{state}\n{logs(container)[-2000:]}"
    assert elapsed < STOP_TIMEOUT_S, f"stopped after {elapsed:.1f} s"

