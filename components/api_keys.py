"""The stack's API key digests in Secret Manager, mounted as a file into every service.

Only sha256 digests are stored (config and secret alike): a leaked state file or config reveals no key.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from components import names


class ApiKeyDigests(pulumi.ComponentResource):
    """Outputs `secret_id`: the Secret Manager secret holding one sha256 hex digest per line."""

    def __init__(self, name: str, project: str, stack: str, digests: list[str], labels: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:ApiKeyDigests", name, None, opts)
        secret = gcp.secretmanager.Secret(
            name,
            project=project,
            secret_id=names.secret_id("api-keys", stack),
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        version = gcp.secretmanager.SecretVersion(
            name,
            secret=secret.id,
            secret_data=pulumi.Output.secret("\n".join(digests) + "\n"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Dependents wait for the version too: a service mounting "latest" before it exists fails to start.
        self.secret_id: pulumi.Output[str] = pulumi.Output.all(secret.secret_id, version.id).apply(lambda v: v[0])
        self.register_outputs({"secret_id": self.secret_id})
