"""The Cloud Run v2 service every endpoint and shared region runs: one builder, typed provider Args.

Dedicated endpoints and shared regions differ only in names, labels and environment; both come from
here so a Cloud Run knob is wired once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import cloudrunv2 as run

from components import names
from components.layout import ServicePlan
from components.monitoring import MonitoringInputs, declare_monitoring
from components.revisions import RevisionInputs, revision_name, traffic
from inference_service.settings import service_env

CONTAINER_PORT = 8080
HEALTH_PATH = "/health"
KEYS_MOUNT = "/secrets/api-keys"
KEYS_FILE = "sha256.txt"
INGRESS = {"all": "INGRESS_TRAFFIC_ALL", "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
           "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
EXECUTION_ENVIRONMENT = {"gen1": "EXECUTION_ENVIRONMENT_GEN1", "gen2": "EXECUTION_ENVIRONMENT_GEN2"}
# Startup probe: the model loads in well under a second, the image pull dominates; allow 2 minutes.
STARTUP_PERIOD_S, STARTUP_FAILURES = 2, 60
# The only project-level roles a service account holds (logical-name suffix -> role): writing its own logs
# and metrics. Everything it reads (its secrets, its bucket) is granted on that resource alone.
RUNTIME_PROJECT_ROLES = {"log-writer": "roles/logging.logWriter", "metric-writer": "roles/monitoring.metricWriter"}
SECRET_READER = "roles/secretmanager.secretAccessor"


@dataclass(frozen=True)
class RuntimeAccount:
    """A service account services run as, and the grants a service must wait for before it starts."""

    email: pulumi.Output[str]
    member: pulumi.Output[str]  # `serviceAccount:<email>`, what IAM grants name
    ready: list[pulumi.Resource]

    def granted(self, *grants: pulumi.Resource) -> RuntimeAccount:
        """The same account, with grants declared on other resources that its services must also wait for."""
        return replace(self, ready=[*self.ready, *grants])


def declare_account(account_id: str, description: str, project: str, api_keys_secret: pulumi.Input[str],
                    parent: pulumi.Resource | None = None) -> RuntimeAccount:
    """Declare a service account that may write logs and metrics in the project and read the API key digests'
    secret; nothing else. A caller grants it more on other resources through `member`, then `granted`.

    One per model (all its endpoints read the same secret, so sharing grants nothing more) and one per
    shared region (each reads only its own bucket): 3 models in all 43 regions need 6 accounts, not 132.
    """
    opts = pulumi.ResourceOptions(parent=parent)
    account = gcp.serviceaccount.Account(
        account_id, account_id=account_id, display_name=f"yolo-fleet {account_id}",
        description=description, project=project, opts=opts)
    member = account.email.apply(lambda email: f"serviceAccount:{email}")
    key_access = gcp.secretmanager.SecretIamMember(
        f"{account_id}-api-keys", project=project, secret_id=api_keys_secret, role=SECRET_READER, member=member,
        opts=opts)
    writes = [gcp.projects.IAMMember(f"{account_id}-{suffix}", project=project, role=role, member=member, opts=opts)
              for suffix, role in RUNTIME_PROJECT_ROLES.items()]
    return RuntimeAccount(account.email, member, [key_access, *writes])


@dataclass(frozen=True)
class Volume:
    """A volume of a service and where its container mounts it: the source is a secret or a bucket."""

    source: run.ServiceTemplateVolumeSecretArgs | run.ServiceTemplateVolumeGcsArgs
    mount_path: str

    def args(self, name: str) -> run.ServiceTemplateVolumeArgs:
        if isinstance(self.source, run.ServiceTemplateVolumeGcsArgs):
            return run.ServiceTemplateVolumeArgs(name=name, gcs=self.source)
        return run.ServiceTemplateVolumeArgs(name=name, secret=self.source)


def secret_file(secret: pulumi.Input[str], file: str, mount_path: str) -> Volume:
    """A secret's latest version, mounted as the file `<mount_path>/<file>`."""
    return Volume(run.ServiceTemplateVolumeSecretArgs(
        secret=secret, items=[run.ServiceTemplateVolumeSecretItemArgs(path=file, version="latest")]), mount_path)


@dataclass(frozen=True)
class ServiceInputs:
    """What a Cloud Run service needs from the rest of the stack."""

    project: str
    stack: str
    image: pulumi.Input[str]
    api_keys_secret: pulumi.Input[str]
    deletion_protection: bool
    monitoring: MonitoringInputs  # alerts, uptime check, SLOs
    # Server settings by field name (inference_service/settings.py), beyond those every service gets.
    server: dict[str, object] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    volumes: Mapping[str, Volume] = field(default_factory=dict)  # beyond the API key digests, by volume name
    revision: RevisionInputs | None = None  # dedicated endpoints: revisions named by content, a rollout's split


def declare_service(plan: ServicePlan, inputs: ServiceInputs, account: RuntimeAccount,
                    parent: pulumi.Resource) -> run.Service:
    """Declare the Cloud Run service `plan.service_name`, running as `account` once its grants exist, and its
    monitoring.

    Ingress and the invoker check are always set from the resolved settings, never left to provider defaults.
    """
    s = plan.settings
    labels = {"region": plan.region.id, "stack": names.label_value(inputs.stack), "managed-by": "yolo-fleet",
              "role": plan.role, **inputs.labels}
    limits = {"cpu": str(s.cpu), "memory": s.memory}
    if s.gpu:
        limits["nvidia.com/gpu"] = "1"

    def env_of(server: Mapping[str, object]) -> dict[str, str]:
        return service_env(model_name=plan.model.name if plan.model else None,
                           api_key_file=f"{KEYS_MOUNT}/{KEYS_FILE}", ort_threads=s.cpu, max_concurrency=s.concurrency,
                           request_timeout=s.timeout_seconds,
                           device="cuda" if s.gpu else "cpu",  # no GPU fails the start: never a CPU billed for an L4
                           **{**inputs.server, **server})

    rev = inputs.revision
    envs = env_of(rev.current.server if rev else {})
    revision = traffics = None
    if rev:
        known = {"settings": s.model_dump(mode="json"), "labels": labels}
        revision = revision_name(plan.service_name, rev.current, envs, known)
        previous = (revision_name(plan.service_name, rev.previous, env_of(rev.previous.server), known)
                    if rev.previous else None)
        traffics = traffic(revision, previous, rev.percent)
    volumes = {"api-keys": secret_file(inputs.api_keys_secret, KEYS_FILE, KEYS_MOUNT), **inputs.volumes}
    container = run.ServiceTemplateContainerArgs(
        image=inputs.image,
        ports=run.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT),
        envs=[run.ServiceTemplateContainerEnvArgs(name=k, value=v) for k, v in envs.items()],
        resources=run.ServiceTemplateContainerResourcesArgs(
            limits=limits, cpu_idle=s.cpu_idle, startup_cpu_boost=s.startup_cpu_boost),
        startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
            http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(path=HEALTH_PATH, port=CONTAINER_PORT),
            period_seconds=STARTUP_PERIOD_S, failure_threshold=STARTUP_FAILURES, timeout_seconds=1),
        liveness_probe=run.ServiceTemplateContainerLivenessProbeArgs(
            http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(path=HEALTH_PATH, port=CONTAINER_PORT),
            period_seconds=30, failure_threshold=3, timeout_seconds=5),
        volume_mounts=[run.ServiceTemplateContainerVolumeMountArgs(name=name, mount_path=volume.mount_path)
                       for name, volume in volumes.items()],
    )
    template = run.ServiceTemplateArgs(
        revision=revision,
        containers=[container],
        service_account=account.email,
        scaling=run.ServiceTemplateScalingArgs(min_instance_count=s.min_instances,
                                               max_instance_count=s.max_instances),
        max_instance_request_concurrency=s.concurrency,
        timeout=f"{s.timeout_seconds}s",
        execution_environment=EXECUTION_ENVIRONMENT[s.execution_environment],
        labels=labels,
        volumes=[volume.args(name) for name, volume in volumes.items()],
        node_selector=run.ServiceTemplateNodeSelectorArgs(accelerator="nvidia-l4") if s.gpu else None,
        gpu_zonal_redundancy_disabled=(not s.gpu_zonal_redundancy) if s.gpu else None,
    )
    service = run.Service(
        plan.name,
        name=plan.service_name,
        project=inputs.project,
        location=plan.region.id,
        description=f"yolo-fleet {plan.role} inference: {plan.name}",
        ingress=INGRESS[s.ingress],
        invoker_iam_disabled=s.public,
        deletion_protection=inputs.deletion_protection,
        labels=labels,
        template=template,
        traffics=traffics,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=account.ready),
    )
    declare_monitoring(plan, service.uri, inputs.monitoring, parent)
    return service
