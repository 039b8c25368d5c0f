"""The shared multi-tenant inference service: one Cloud Run service and one model bucket in each shared region.

Each region's service mounts only its own region's bucket (read-only) and can read only that bucket, so
a tenant's models, uploaded to its data region's bucket, never leave that region. Tenants (owner, data
region, API key digests; never keys) come from stack config as a Secret Manager file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pulumi
import pulumi_gcp as gcp
import yaml
from pulumi_gcp import cloudrunv2 as run
from pulumi_gcp import storage

from components import names
from components.audit import storage_data_access_logs
from components.layout import ServicePlan
from components.routing import SharedRoutes
from components.service import SECRET_READER, ServiceInputs, Volume, declare_account, declare_service, secret_file
from components.stack_config import TenantSpec

MODELS_DIR = "/models"
BUCKET_READER = "roles/storage.objectViewer"
SERVER_OVERHEAD_MB = 768  # the server, onnxruntime and in-flight images, outside the model cache


def model_cache_mb(memory_gib: int) -> int:
    """How much of an instance's memory the shared server may spend on loaded tenant models."""
    return max(256, memory_gib * 1024 - SERVER_OVERHEAD_MB)
TENANTS_MOUNT = "/secrets/tenants"
TENANTS_FILE = "tenants.yaml"


def tenants_file(tenants: dict[str, TenantSpec]) -> str:
    """The server's tenants file: `tenants: {owner: {data_region, key_sha256}}`."""
    return yaml.safe_dump({"tenants": {owner: t.model_dump() for owner, t in sorted(tenants.items())}},
                          sort_keys=True)


@dataclass(frozen=True)
class SharedInferenceArgs:
    regions: list[tuple[ServicePlan, ServiceInputs]]  # one service per shared region, with its inputs
    tenants: dict[str, TenantSpec]
    routes: SharedRoutes  # the public host of each region: the peers a service redirects to
    labels: dict[str, str]


class SharedInference(pulumi.ComponentResource):
    """Outputs `urls`, `service_names`, `buckets` and `regions`, each keyed by region id."""

    urls: dict[str, pulumi.Output[str]]
    service_names: dict[str, pulumi.Output[str]]
    buckets: dict[str, pulumi.Output[str]]
    regions: list[str]

    def __init__(self, name: str, args: SharedInferenceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:SharedInference", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        project = args.regions[0][1].project
        stack = args.regions[0][1].stack
        secret = gcp.secretmanager.Secret(
            f"{name}-tenants", project=project, secret_id=names.secret_id("tenants", stack),
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=args.labels, opts=child)
        version = gcp.secretmanager.SecretVersion(
            f"{name}-tenants", secret=secret.id, secret_data=pulumi.Output.secret(tenants_file(args.tenants)),
            opts=child)
        tenants_secret = pulumi.Output.all(secret.secret_id, version.id).apply(lambda v: v[0])
        storage_data_access_logs(f"{name}-bucket-reads", project, parent=self)  # who read which tenant's file

        declared: dict[str, run.Service] = {}
        buckets: dict[str, pulumi.Output[str]] = {}
        for plan, inputs in args.regions:
            rid = plan.region.id
            bucket = storage.Bucket(
                plan.name, name=names.bucket_name(project, stack, rid), project=project, location=rid,
                uniform_bucket_level_access=True, public_access_prevention="enforced",
                versioning=storage.BucketVersioningArgs(enabled=True), force_destroy=False,
                labels={**args.labels, "region": rid, "role": "shared-models"}, opts=child)
            buckets[rid] = bucket.name
            account = declare_account(
                plan.account_id, f"Runs the shared inference service {plan.service_name} in {rid}; reads only "
                f"the {rid} tenant model bucket", project, inputs.api_keys_secret, parent=self)
            reads = [
                storage.BucketIAMMember(plan.account_id, bucket=bucket.name, role=BUCKET_READER,
                                        member=account.member, opts=child),
                gcp.secretmanager.SecretIamMember(
                    f"{plan.account_id}-tenants", project=project, secret_id=tenants_secret,
                    role=SECRET_READER, member=account.member, opts=child),
            ]
            peers = {other: args.routes.url(other) for other in args.routes.hosts if other != rid}
            inputs = replace(
                inputs,
                server={**inputs.server, "mode": "shared", "models_dir": MODELS_DIR, "region": rid, "peers": peers,
                        "shared_regions": list(args.routes.hosts), "tenants_file": f"{TENANTS_MOUNT}/{TENANTS_FILE}",
                        "model_cache_mb": model_cache_mb(plan.settings.memory_gib)},
                volumes={**inputs.volumes,
                         "models": Volume(run.ServiceTemplateVolumeGcsArgs(bucket=bucket.name, read_only=True),
                                          MODELS_DIR),
                         "tenants": secret_file(tenants_secret, TENANTS_FILE, TENANTS_MOUNT)})
            declared[rid] = declare_service(plan, inputs, account.granted(*reads), parent=self)
        self.urls = {rid: d.uri for rid, d in declared.items()}
        self.service_names = {rid: d.name for rid, d in declared.items()}
        self.buckets = buckets
        self.regions = list(declared)
        self.register_outputs({"urls": self.urls, "service_names": self.service_names, "buckets": self.buckets,
                               "regions": self.regions})
