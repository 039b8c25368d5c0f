"""Data Access audit logs for Cloud Storage: who read (and wrote) which tenant's model file.

Admin Activity logs are always on, but reads of objects are Data Access logs, which are off by default
and can only be switched on per service for a whole project, folder or organization: Cloud Storage has
no per-bucket switch (https://cloud.google.com/logging/docs/audit/configure-data-access). So a stack
with tenant model buckets turns them on for storage.googleapis.com in its project, and each entry names
the bucket and object (`<owner>/<project>/<model>.onnx`) and the caller. These logs are billed as
Cloud Logging ingestion beyond the free allotment, for every bucket in the project.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

STORAGE_SERVICE = "storage.googleapis.com"
# DATA_READ: object reads (a shared service loading a tenant's model, anyone downloading one);
# DATA_WRITE: uploads, overwrites and deletions of tenants' files.
LOG_TYPES = ("DATA_READ", "DATA_WRITE")


def storage_data_access_logs(name: str, project: str,
                             parent: pulumi.Resource | None = None) -> gcp.projects.IAMAuditConfig:
    """Turn on Cloud Storage Data Access logs in `project`.

    IAMAuditConfig is authoritative for the service: it replaces any audit config for storage.googleapis.com
    set on the project outside this stack (exemptions included).
    """
    return gcp.projects.IAMAuditConfig(
        name, project=project, service=STORAGE_SERVICE,
        audit_log_configs=[gcp.projects.IAMAuditConfigAuditLogConfigArgs(log_type=t) for t in LOG_TYPES],
        opts=pulumi.ResourceOptions(parent=parent))
