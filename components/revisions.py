"""Revisions named by their content, and the traffic split of a model rollout.

A dedicated service's revision is `<service name>-<12 hex>`, a hash of what makes the revision: the image's
identity (a hash of its build inputs: the server code, the runtime variant and every model file it holds, by
sha256; or the prebuilt image's digest), the sha256 of the model file it serves, its environment, its resolved
settings and labels, and the code that writes the template (components/service.py). So the plan names the
revision it creates, and the one a rollout keeps serving beside it, without reading cloud state; and any change
to the template gives a new name, as Cloud Run requires (a revision is immutable).

The model files are part of the image's identity because the image holds every file the stack names
(components/image.py): a rollout's new file changes the image, hence every revision's name. `fleet rollout`
therefore first stages the file (`rollout: {to, percent: 0, regions: []}`: every service gets a revision of
its unchanged model on the new image), and the old revision of every later wave is that one, computable from
the config alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pulumi_gcp import cloudrunv2 as run

from components.image import image_path, model_files_arg
from components.layout import ServicePlan

HASH_CHARS = 12
MAX_REVISION_NAME = 63  # Cloud Run: a revision name is `<service>-<suffix>`, at most 63 characters
CANARY_TAG = "canary"
REVISION_TRAFFIC = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
# The image's build inputs besides model files (inference_service/Dockerfile, .dockerignore).
CODE_INPUTS = ("inference_service", "models/samples")
NOT_INPUTS = ("__pycache__", "_letterbox.so")  # built in the image, never taken from a checkout
TEMPLATE_CODE = Path(__file__).resolve().parent / "service.py"


@functools.cache
def code_fingerprint(root: Path) -> str:
    """sha256 over the server image's build inputs other than model files: paths and contents, sorted."""
    digest = hashlib.sha256()
    for top in CODE_INPUTS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not any(part in NOT_INPUTS for part in path.parts) and path.suffix != ".pyc":
                digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Version:
    """One revision's content beyond the service's settings: its image and model, and the server settings it adds."""

    content: str
    server: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageContent:
    """What an image variant holds, as revision names see it: its identity and each model file's sha256."""

    identity: str
    models: Mapping[str, str]

    def version(self, file: str) -> Version:
        sha = self.models[str(PurePosixPath(file))]
        return Version(f"{self.identity} {sha}", {"model_path": str(image_path(file))})


def image_content(root: Path, files: Sequence[str], prebuilt: str | None, gpu: bool) -> ImageContent:
    """The identity of the image the plan builds from `root` with `files` (or of the prebuilt one)."""
    arg = model_files_arg(root, files)
    models = {name: sha for sha, name in (line.split(None, 1) for line in arg.splitlines())}
    if prebuilt:
        return ImageContent(prebuilt, models)
    built = hashlib.sha256(f"{code_fingerprint(root)}\n{'gpu' if gpu else 'cpu'}\n{arg}".encode()).hexdigest()
    return ImageContent(f"built:{built}", models)


@dataclass(frozen=True)
class RevisionInputs:
    """The revision a dedicated service's template creates and, in a rollout wave, the one it keeps beside it."""

    current: Version
    previous: Version | None = None
    percent: int = 100  # the current revision's share of requests when `previous` is set


def endpoint_revisions(plan: ServicePlan, image: ImageContent) -> RevisionInputs:
    """A region in its model's rollout wave runs `rollout.to` as the template, beside `file`; others run `file`."""
    assert plan.model is not None, "only dedicated endpoints roll out models"
    rollout = plan.model.rollout
    if rollout is None or plan.region.id not in rollout.regions:
        return RevisionInputs(image.version(plan.model.file))
    return RevisionInputs(image.version(rollout.to), image.version(plan.model.file), rollout.percent)


@functools.cache
def _template_code() -> str:
    return hashlib.sha256(TEMPLATE_CODE.read_bytes()).hexdigest()


def revision_name(service_name: str, version: Version, env: Mapping[str, str], template: Mapping[str, object]) -> str:
    """`<service>-<hash of everything the revision is made of>`; `template` holds its other known settings."""
    content = json.dumps({"version": version.content, "env": dict(env), "template": template,
                          "code": _template_code()}, sort_keys=True, default=str)
    name = f"{service_name}-{hashlib.sha256(content.encode()).hexdigest()[:HASH_CHARS]}"
    assert len(name) <= MAX_REVISION_NAME, f"service names stay under 50 characters: {name}"
    return name


def traffic(current: str, previous: str | None, percent: int) -> list[run.ServiceTrafficArgs]:
    """All requests to `current`, or in a wave `percent` to it (tagged canary: its own URL) and the rest to
    `previous`. Always named revisions, never LATEST: the split is exactly what the plan says."""
    if previous is None:
        return [run.ServiceTrafficArgs(type=REVISION_TRAFFIC, revision=current, percent=100)]
    return [run.ServiceTrafficArgs(type=REVISION_TRAFFIC, revision=previous, percent=100 - percent),
            run.ServiceTrafficArgs(type=REVISION_TRAFFIC, revision=current, percent=percent, tag=CANARY_TAG)]
