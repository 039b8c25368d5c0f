"""The stack's API key digests in Secret Manager, mounted as a file into every service.

Only sha256 digests are stored (config and secret alike): a leaked state file or config reveals no key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components import names


@dataclass(frozen=True)
class ApiKeyDigestsArgs:
    project: str
    stack: str
    digests: list[str]  # sha256 hex digests of the keys (stack config `api_key_sha256`), never keys
    labels: dict[str, str]


class ApiKeyDigests(pulumi.ComponentResource):
    """Outputs `secret_id`: the Secret Manager secret holding one sha256 hex digest per line."""

    secret_id: pulumi.Output[str]

    def __init__(self, name: str, args: ApiKeyDigestsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:ApiKeyDigests", name, None, opts)
        secret = gcp.secretmanager.Secret(
            name,
            project=args.project,
            secret_id=names.secret_id("api-keys", args.stack),
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        version = gcp.secretmanager.SecretVersion(
            name,
            secret=secret.id,
            secret_data=pulumi.Output.secret("\n".join(args.digests) + "\n"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Dependents wait for the version too: a service mounting "latest" before it exists fails to start.
        self.secret_id = pulumi.Output.all(secret.secret_id, version.id).apply(lambda v: v[0])
        self.register_outputs({"secret_id": self.secret_id})
