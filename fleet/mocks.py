"""Pulumi mocks that stand in for GCP: they echo inputs and fill the outputs the cloud would compute.

Computed values are honest placeholders (`PROJECT_NUMBER` in URLs) or derived from the inputs (the
image digest is a hash of the build context), never pretend-real values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor

from components.image import MODEL_FILES_ARG, model_files_in_arg


@dataclass
class RecordedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    parent: str | None = None  # the parent's logical name (None for the stack's direct children)
    # (type, logical name) of each resource this one waits for before it is created: `depends_on` and the
    # resources whose outputs its inputs use.
    depends_on: frozenset[tuple[str, str]] = frozenset()


# What the cloud would number the project: a placeholder that reads as one, never a made-up number.
PROJECT_NUMBER = "PROJECT_NUMBER"


def context_digest(context: str, dockerfile: str, build_args: Mapping[str, str]) -> str:
    """A stand-in image digest: sha256 over the Dockerfile, the build arguments, the sources it copies (server
    code, Test page samples) and the model files MODEL_FILES names; other ONNX files never reach the image."""
    root = Path(context)
    h = hashlib.sha256(Path(dockerfile).read_bytes() if Path(dockerfile).is_file() else b"")
    h.update(json.dumps(dict(build_args), sort_keys=True).encode())
    copied = [p for sub in ("inference_service", "models/samples") for p in sorted((root / sub).rglob("*"))]
    models = [root / f for f in model_files_in_arg(build_args.get(MODEL_FILES_ARG, ""))]
    for path in [*copied, *models]:
        # compiled files are build outputs (the image compiles its own kernel), not sources
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".so":
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()


def resource_id(name: str) -> str:
    """The id the mocks give a resource: what references to it (`backend.id`, `neg.id`) resolve to."""
    return f"{name}-id"


def _computed(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    project = inputs.get("project", "my-gcp-project")
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        return {"email": email, "name": f"projects/{project}/serviceAccounts/{email}",
                "member": f"serviceAccount:{email}"}
    if typ == "gcp:cloudrunv2/service:Service":
        service = inputs.get("name", name)
        uri = f"https://{service}-{PROJECT_NUMBER}.{inputs['location']}.run.app"
        return {"uri": uri, "name": service, "urls": [uri]}
    if typ == "gcp:monitoring/notificationChannel:NotificationChannel":
        return {"name": f"projects/{project}/notificationChannels/{name}"}
    if typ == "gcp:secretmanager/secret:Secret":
        return {"name": f"projects/{project}/secrets/{inputs['secretId']}"}
    if typ == "gcp:artifactregistry/repository:Repository":
        return {"name": inputs["repositoryId"]}
    if typ == "gcp:compute/globalAddress:GlobalAddress":
        return {"address": "203.0.113.10"}  # TEST-NET-3 (RFC 5737): documentation-only, never a real address
    if typ == "docker-build:index:Image":
        digest = context_digest(inputs["context"]["location"], inputs["dockerfile"]["location"],
                                inputs.get("buildArgs") or {})
        return {"digest": digest, "ref": f"{inputs['tags'][0].rsplit(':', 1)[0]}@{digest}"}
    return {}


class FleetMocks(pulumi.runtime.Mocks):
    """Records every resource the program declares, in order, and every data source it calls."""

    def __init__(self) -> None:
        self.resources: list[RecordedResource] = []
        self.invokes: list[str] = []  # data-source calls' tokens: they use Google APIs too
        self.parents: dict[tuple[str, str], str | None] = {}
        self.depends_on: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        key = (args.typ, args.name)
        self.resources.append(RecordedResource(args.typ, args.name, dict(args.inputs), bool(args.custom),
                                               self.parents.get(key), self.depends_on.get(key, frozenset())))
        return resource_id(args.name), {**args.inputs, **_computed(args.typ, args.name, args.inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.invokes.append(args.token)
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": "offline-placeholder-token", "project": "my-gcp-project", "id": "offline"}, []
        if args.token == "gcp:organizations/getProject:getProject":
            project = args.args.get("projectId", "my-gcp-project")
            return {"number": PROJECT_NUMBER, "projectId": project, "name": project,
                    "id": f"projects/{project}"}, []
        return {}, []


def _urn_key(urn: str) -> tuple[str, str]:
    """urn:pulumi:<stack>::<project>::<parent types $ joined>$<type>::<name> -> (type, name)."""
    *_, types, name = urn.split("::")
    return types.rsplit("$", 1)[-1], name


@dataclass
class RecordingMonitor(MockMonitor):
    """A MockMonitor that also tells the mocks each resource's parent and dependencies (MockResourceArgs lacks
    them)."""

    mocks: FleetMocks = field(default_factory=FleetMocks)

    def __post_init__(self) -> None:
        super().__init__(self.mocks)

    def RegisterResource(self, request: Any) -> Any:
        parent = None
        if request.parent:  # urn:pulumi:<stack>::<project>::<parent types joined by $>::<name>
            *_, types, name = request.parent.split("::")
            parent = None if types.rsplit("$", 1)[-1] == "pulumi:pulumi:Stack" else name
        self.mocks.parents[(request.type, request.name)] = parent
        self.mocks.depends_on[(request.type, request.name)] = frozenset(map(_urn_key, request.dependencies))
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]  # pulumi leaves it unannotated
