"""The server image: built once from inference_service/Dockerfile, pushed to one Artifact Registry
multi-region repository per continent so every endpoint pulls from nearby, and deployed by digest.

Cloud Run pulls images as its service agent, not as the services' own accounts: the agent alone gets
read access, on each repository (not the project). Pushing is the deployer's credentials' job; no
service account of the fleet can write to a repository.

The image holds exactly the stack's model files: the build argument MODEL_FILES names each one with its
sha256 (`sha256sum` lines), and the Dockerfile copies those, from a bind mount of the context, to
/app/<repository path>. A build argument works alike in docker buildx, buildah and docker-build's Image,
needs no copy of the repository, and its digests make a changed model change the build's cache key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from components import names
from components.errors import FleetError

IMAGE_NAME = "inference-server"
GPU_IMAGE_NAME = "inference-server-gpu"  # the RUNTIME=gpu variant, beside the CPU one in each repository
RUNTIME_ARG = "RUNTIME"  # the Dockerfile's choice of onnxruntime: cpu (default) or gpu
REPOSITORY_READER = "roles/artifactregistry.reader"
# Cleanup (see cleanup_policies): what a repository keeps of the images pushed over time.
DELETE_AFTER_DAYS = 30
KEEP_NEWEST = 10
STACK_TAG_PREFIX = "stack-"
APP_DIR = PurePosixPath("/app")  # the image's copy of the repository's files: <path> is /app/<path>
MODEL_FILES_ARG = "MODEL_FILES"


def image_path(repo_file: str) -> PurePosixPath:
    """Where the Dockerfile puts a repository file: /app/<its path>, so equal names in two folders never meet."""
    return APP_DIR / PurePosixPath(repo_file)  # `./models/x.onnx` is `models/x.onnx`


def model_files_arg(context: Path, files: Sequence[str]) -> str:
    """MODEL_FILES: one `sha256sum` line per distinct file, sorted (`sha256sum --check` verifies it in the build)."""
    lines = []
    for name in sorted({str(PurePosixPath(f)) for f in files}):
        path = context / name
        if not path.is_file() or not path.resolve().is_relative_to(context.resolve()):
            raise FleetError(f"{name}: not a file in the repository ({context}); the image copies model files "
                             "from the build context")
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}")
    return "\n".join(lines)


def model_files_in_arg(arg: str) -> list[str]:
    """The files a MODEL_FILES value names (what the image will hold, each at image_path)."""
    return [line.split(None, 1)[1] for line in arg.splitlines() if line.strip()]


def cloud_run_agent(project_number: str) -> str:
    """The identity Cloud Run pulls images with: the project's serverless service agent."""
    return f"serviceAccount:service-{project_number}@serverless-robot-prod.iam.gserviceaccount.com"


def registry_host(location: str) -> str:
    return f"{location}-docker.pkg.dev"


def stack_tag(stack: str) -> str:
    """The tag each push also gets: it moves to the stack's newest image, the digest its services run."""
    return STACK_TAG_PREFIX + names.stack_token(stack)


def cleanup_policies() -> list[gcp.artifactregistry.RepositoryCleanupPolicyArgs]:
    """Delete versions older than DELETE_AFTER_DAYS, except the newest KEEP_NEWEST and each stack's current image.

    A keep policy only exempts versions from a delete policy, so a keep policy alone deletes nothing; a
    version matching both a delete and a keep policy is kept
    (https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy-overview). The digest a
    stack's services run is the one its last `pulumi up` pushed, which carries the stack's tag
    (`stack_tag`): a stack that has not deployed for months keeps its image. Changes apply within a day.
    """
    policy, condition = gcp.artifactregistry.RepositoryCleanupPolicyArgs, \
        gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs
    return [
        policy(id="delete-old", action="DELETE",
               condition=condition(tag_state="ANY", older_than=f"{DELETE_AFTER_DAYS * 86400}s")),
        policy(id="keep-newest", action="KEEP",
               most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                   keep_count=KEEP_NEWEST)),
        policy(id="keep-deployed", action="KEEP",
               condition=condition(tag_state="TAGGED", tag_prefixes=[STACK_TAG_PREFIX])),
    ]


@dataclass(frozen=True)
class ServerImageArgs:
    project: str
    locations: list[str]  # Artifact Registry multi-regions: us, europe, asia
    repository_id: str  # the stack's repository in each location (components/names.py: yolo-fleet-<stack>)
    context: str  # the repository root (the image copies models/ and inference_service/)
    dockerfile: str
    stack: str  # each push is also tagged stack_tag(stack), which the cleanup policies keep
    prebuilt: str | None = None  # an image already pushed elsewhere, by digest: no build of the CPU variant
    labels: dict[str, str] | None = None
    model_files: Sequence[str] = field(default_factory=tuple)  # the stack's model files (repository paths)
    gpu: bool = False  # some service asks for a GPU: also the GPU variant, which only GPU services run
    prebuilt_gpu: str | None = None  # the GPU variant already pushed elsewhere, by digest


def check_prebuilt(prebuilt: str | None, prebuilt_gpu: str | None, gpu_services: Sequence[str], source: str) -> None:
    """A prebuilt CPU image cannot serve on an L4: with `image` set, GPU services need `gpu_image` too."""
    if prebuilt and not prebuilt_gpu and gpu_services:
        raise FleetError(f"{source}: image: a prebuilt CPU image, but {', '.join(gpu_services)} ask for a GPU; set "
                         "yolo-fleet:gpu_image to a GPU build of the same server (docker buildx build --build-arg "
                         f"{RUNTIME_ARG}=gpu ...) by digest, or unset image to build both")


class ServerImage(pulumi.ComponentResource):
    """Outputs `digest` (and `gpu_digest` when a service asks for a GPU) and, per location, the pull reference
    `<host>/<project>/yolo-fleet-<stack>/inference-server[-gpu]@sha256:...`; a reference resolves only once Cloud
    Run may pull from that location's repository.

    The GPU variant is the same Dockerfile with RUNTIME=gpu (onnxruntime-gpu, CUDA 12 and cuDNN from PyPI wheels,
    2 GB of wheels more), pushed as its own image beside the CPU one: declared only when some service asks for a GPU, so
    a CPU-only stack builds, pushes and stores nothing more, and CPU services keep pulling the small image."""

    digest: pulumi.Output[str]

    def __init__(self, name: str, args: ServerImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:ServerImage", name, None, opts)
        self._prebuilt = {False: args.prebuilt, True: args.prebuilt_gpu}
        self._project = args.project
        self._repository_id = args.repository_id
        self._pull_grants: dict[str, gcp.artifactregistry.RepositoryIamMember] = {}
        variants = [False, True] if args.gpu else [False]
        built = [gpu for gpu in variants if not self._prebuilt[gpu]]
        repositories = self._declare_repositories(name, args) if built else []
        digests = {gpu: self._build(name, args, gpu, repositories) if gpu in built
                   else pulumi.Output.from_input(str(self._prebuilt[gpu]).split("@", 1)[1]) for gpu in variants}
        self.digest: pulumi.Output[str] = digests[False]
        self.gpu_digest: pulumi.Output[str] | None = digests.get(True)
        self.register_outputs({"digest": self.digest, "gpu_digest": self.gpu_digest})

    def _declare_repositories(self, name: str, args: ServerImageArgs) -> list[gcp.artifactregistry.Repository]:
        repositories = [
            gcp.artifactregistry.Repository(
                f"{name}-{location}",
                project=args.project,
                location=location,
                repository_id=args.repository_id,
                format="DOCKER",
                description="yolo-fleet inference server images",
                labels=args.labels,
                docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=False),
                cleanup_policy_dry_run=False,
                cleanup_policies=cleanup_policies(),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for location in args.locations
        ]
        agent = gcp.organizations.get_project_output(project_id=args.project).number.apply(cloud_run_agent)
        self._pull_grants = {
            location: gcp.artifactregistry.RepositoryIamMember(
                f"{name}-{location}-pull", project=args.project, location=location,
                repository=repository.repository_id, role=REPOSITORY_READER, member=agent,
                opts=pulumi.ResourceOptions(parent=self))
            for location, repository in zip(args.locations, repositories, strict=True)
        }
        return repositories

    def _build(self, name: str, args: ServerImageArgs, gpu: bool,
               repositories: list[gcp.artifactregistry.Repository]) -> pulumi.Output[str]:
        """Build and push one variant to every location's repository; its digest."""
        token = gcp.organizations.get_client_config_output().access_token
        image = docker_build.Image(
            f"{name}-gpu" if gpu else name,
            context=docker_build.BuildContextArgs(location=args.context),
            dockerfile=docker_build.DockerfileArgs(location=args.dockerfile),
            build_args={MODEL_FILES_ARG: model_files_arg(Path(args.context), args.model_files),
                        RUNTIME_ARG: "gpu" if gpu else "cpu"},
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            tags=[f"{self._repository(loc, gpu)}:{tag}" for loc in args.locations
                  for tag in ("latest", stack_tag(args.stack))],
            registries=[docker_build.RegistryArgs(address=registry_host(loc), username="oauth2accesstoken",
                                                  password=pulumi.Output.secret(token))
                        for loc in args.locations],
            opts=pulumi.ResourceOptions(parent=self, depends_on=repositories),
        )
        return image.digest

    def _repository(self, location: str, gpu: bool = False) -> str:
        image = GPU_IMAGE_NAME if gpu else IMAGE_NAME
        return f"{registry_host(location)}/{self._project}/{self._repository_id}/{image}"

    def ref(self, location: str, gpu: bool = False) -> pulumi.Output[str]:
        """The image (the GPU variant for a GPU service) by digest, pulled from `location`'s repository, or the
        prebuilt reference."""
        if prebuilt := self._prebuilt[gpu]:
            return pulumi.Output.from_input(prebuilt)
        digest = self.gpu_digest if gpu else self.digest
        if digest is None:
            raise ValueError("the GPU variant is declared only when ServerImageArgs.gpu is set")
        pullable = pulumi.Output.all(digest, self._pull_grants[location].id)
        return pullable.apply(lambda v: f"{self._repository(location, gpu)}@{v[0]}")
