"""Artifact Registry cleanup and the tenant buckets' Data Access audit logs, as the mocked program plans them.

The cleanup policies are judged by a small evaluator of Artifact Registry's documented semantics
(https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy-overview): a version is deleted
when it matches a DELETE policy and no KEEP policy; KEEP `mostRecentVersions` keeps the newest N.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from components.image import stack_tag
from fleet.program import Plan, evaluate

REPOSITORY = "gcp:artifactregistry/repository:Repository"
IMAGE = "docker-build:index:Image"
AUDIT = "gcp:projects/iAMAuditConfig:IAMAuditConfig"
DAY = 86400
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Version:
    digest: str
    age_days: int
    tags: tuple[str, ...] = field(default_factory=tuple)


def _matches(condition: dict, v: Version) -> bool:
    state = condition.get("tagState", "ANY")
    if (state == "TAGGED" and not v.tags) or (state == "UNTAGGED" and v.tags):
        return False
    prefixes = condition.get("tagPrefixes")
    if prefixes and not any(t.startswith(p) for t in v.tags for p in prefixes):
        return False
    older = condition.get("olderThan")
    return older is None or v.age_days * DAY > int(older.removesuffix("s"))


def surviving(policies: list[dict], versions: list[Version]) -> set[str]:
    """The digests a repository still holds once its cleanup policies ran."""
    newest = sorted(versions, key=lambda v: v.age_days)
    kept: set[str] = set()
    deleted: set[str] = set()
    for p in policies:
        if p["action"] == "KEEP" and "mostRecentVersions" in p:
            kept |= {v.digest for v in newest[:int(p["mostRecentVersions"]["keepCount"])]}
        elif p["action"] == "KEEP":
            kept |= {v.digest for v in versions if _matches(p["condition"], v)}
        else:
            deleted |= {v.digest for v in versions if _matches(p["condition"], v)}
    return {v.digest for v in versions} - (deleted - kept)


def repositories(plan: Plan) -> list[dict]:
    return [r.inputs for r in plan.custom(REPOSITORY)]


def test_old_images_are_deleted_but_the_newest_and_each_stacks_current_one_are_kept(prod_plan):
    # 20 pushes, one a day 1..20 weeks ago (newest first); prod's current image is the 15th newest,
    # dev's the newest. Only untagged/latest-less versions older than 30 days and outside the newest 10 go.
    versions = [Version(f"sha256:{i:02d}", 7 * (i + 1)) for i in range(20)]
    versions[0] = Version(versions[0].digest, 7, ("latest", stack_tag("dev")))
    versions[14] = Version(versions[14].digest, 7 * 15, (stack_tag("prod"),))
    for repo in repositories(prod_plan):
        assert repo["cleanupPolicyDryRun"] is False, "policies act, not just report"
        left = surviving(repo["cleanupPolicies"], versions)
        assert left == {f"sha256:{i:02d}" for i in range(10)} | {"sha256:14"}


def test_a_keep_policy_alone_would_delete_nothing(prod_plan):
    (policies, *_) = [r["cleanupPolicies"] for r in repositories(prod_plan)]
    versions = [Version(f"d{i}", 100 + i) for i in range(30)]
    assert surviving([p for p in policies if p["action"] == "KEEP"], versions) == {v.digest for v in versions}
    assert len(surviving(policies, versions)) == 10


def test_each_push_carries_the_stack_tag_the_keep_policy_protects(prod_plan):
    (image,) = prod_plan.custom(IMAGE)
    assert {t.rsplit(":", 1)[1] for t in image.inputs["tags"]} == {"latest", "stack-prod"}
    (policies, *_) = [r["cleanupPolicies"] for r in repositories(prod_plan)]
    deployed = Version("sha256:current", 365, (stack_tag("prod"),))
    assert surviving(policies, [deployed] + [Version(f"n{i}", i) for i in range(10)]) >= {"sha256:current"}


@pytest.mark.parametrize("stack", ["prod", "Stg.EU_1", "a" * 200, "team.prod-2"])
def test_stack_tags_are_valid_docker_tags(stack):
    assert DOCKER_TAG.fullmatch(stack_tag(stack)), stack_tag(stack)
    assert stack_tag(stack).startswith("stack-")


def test_storage_data_access_logs_record_reads_and_writes_of_tenant_files(prod_plan):
    (audit,) = prod_plan.custom(AUDIT)
    assert audit.inputs["service"] == "storage.googleapis.com"
    assert audit.inputs["project"] == "my-gcp-project"
    assert {c["logType"] for c in audit.inputs["auditLogConfigs"]} == {"DATA_READ", "DATA_WRITE"}
    assert not any(c.get("exemptedMembers") for c in audit.inputs["auditLogConfigs"]), "nobody reads unlogged"


def test_no_audit_config_without_tenant_buckets(write_catalog):
    def no_shared_regions(data: dict) -> None:
        for entry in data["regions"]:
            if entry["id"] in data["shared"]["regions"]:
                entry["enabled"] = False

    models = [{"name": "demo", "file": "models/demo-e2e.onnx", "regions": ["asia-northeast1"]}]
    plan = evaluate("dev", catalog=write_catalog(no_shared_regions),
                    config_overrides={"yolo-fleet:models": json.dumps(models)})
    assert plan.custom("gcp:cloudrunv2/service:Service")
    assert not plan.custom("gcp:storage/bucket:Bucket")
    assert not plan.custom(AUDIT)
