"""Cloud security of the declared fleet: each identity's exact grants, where keys live, ingress and invoker
settings, Artifact Registry access; and the pack's security policies refusing each way of getting it wrong.

Violations are built by mutating the real mocked plan (a resource's inputs, or an added resource), the
way a careless change to the components would, and judged with `fleet policy`'s own runner.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import replace
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from components.service import INGRESS
from fleet.cli import main
from fleet.mocks import RecordedResource
from fleet.policy import run_policies
from fleet.program import SECRET_SIG, SECRET_SIG_KEY, Plan, evaluate, stack_config
from policy.config import PolicySetting, load_pack_config
from policy.facts import load_facts
from policy.security import looks_like_key
from tests.conftest import deployable

SERVICE = "gcp:cloudrunv2/service:Service"
ACCOUNT = "gcp:serviceaccount/account:Account"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
REPO_MEMBER = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
# Where each kind of grant says what it is on.
TARGET = {PROJECT_MEMBER: "project", "gcp:secretmanager/secretIamMember:SecretIamMember": "secretId",
          "gcp:storage/bucketIAMMember:BucketIAMMember": "bucket", REPO_MEMBER: "location"}
LOGS, METRICS = "roles/logging.logWriter", "roles/monitoring.metricWriter"
SECRET_READER, BUCKET_READER = "roles/secretmanager.secretAccessor", "roles/storage.objectViewer"
AGENT = "serviceAccount:service-PROJECT_NUMBER@serverless-robot-prod.iam.gserviceaccount.com"
SETTINGS = load_pack_config()
SECURITY = ("dedicated-service-accounts", "service-account-project-roles", "no-secrets-in-plain-env",
            "access-settings-explicit", "artifact-registry-access")


def services(plan: Plan) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in plan.custom(SERVICE)}


def grants_to(plan: Plan, member: str) -> set[tuple[str, str, str]]:
    """(grant type, what it is on, role) of every IAM grant in the plan naming `member`."""
    found = set()
    for r in plan.custom():
        if member in (r.inputs.get("member"), *r.inputs.get("members", ())):
            assert r.type in TARGET, f"{r.type} {r.name} grants something to {member}"
            found.add((TARGET[r.type], r.inputs[TARGET[r.type]], r.inputs["role"]))
    return found


def only(policy: str, resources: list[RecordedResource], stack: str = "prod",
         options: dict[str, Any] | None = None) -> dict[str, str]:
    """resource name -> message of what `policy` alone reports (as `fleet policy` runs it)."""
    level = SETTINGS[policy].level
    settings = {name: PolicySetting(EnforcementLevel.DISABLED) for name in SETTINGS}
    settings[policy] = PolicySetting(level, options if options is not None else SETTINGS[policy].options)
    violations = run_policies(resources, load_facts(stack), settings)
    found = {v.resource: v.message for v in violations}
    assert len(found) == len(violations), "one message per resource"
    return found


def edited(plan: Plan, name: str, change: Any, type_token: str = SERVICE) -> list[RecordedResource]:
    """The plan's resources with `change(inputs)` applied to a copy of resource `name`'s inputs."""
    out = []
    for r in plan.resources:
        if r.type == type_token and r.name == name:
            inputs = copy.deepcopy(r.inputs)
            change(inputs)
            r = replace(r, inputs=inputs)
        out.append(r)
    return out


def add_env(name: str, value: Any) -> Any:
    return lambda inputs: inputs["template"]["containers"][0]["envs"].append({"name": name, "value": value})


def grant(type_token: str, name: str, **inputs: Any) -> RecordedResource:
    return RecordedResource(type_token, name, inputs, True)


# --- what the components declare ---------------------------------------------------------------------------


def test_each_service_account_holds_exactly_what_its_service_needs(prod_plan):
    runs_as = {name: s["template"]["serviceAccount"] for name, s in services(prod_plan).items()}
    assert len(runs_as) == 46 and len(set(runs_as.values())) == 4, "one account for the model, one per shared region"
    demo = {runs_as[n] for n in runs_as if n.startswith("demo-")}
    assert demo == {"demo-prod@my-gcp-project.iam.gserviceaccount.com"}
    assert len({runs_as[n] for n in runs_as if n.startswith("shared-")}) == 3, "each shared region its own"
    declared = {f"{a.inputs['accountId']}@{a.inputs['project']}.iam.gserviceaccount.com"
                for a in prod_plan.custom(ACCOUNT)}
    assert set(runs_as.values()) == declared
    for name, email in runs_as.items():
        expected = {("project", "my-gcp-project", LOGS), ("project", "my-gcp-project", METRICS),
                    ("secretId", "yolo-fleet-prod-api-keys", SECRET_READER)}
        if name.startswith("shared-"):
            region = services(prod_plan)[name]["location"]
            expected |= {("secretId", "yolo-fleet-prod-tenants", SECRET_READER),
                         ("bucket", f"my-gcp-project-prod-models-{region}", BUCKET_READER)}
        assert grants_to(prod_plan, f"serviceAccount:{email}") == expected, name


def test_cloud_run_pulls_images_with_read_access_on_each_repository_only(prod_plan):
    repositories = {r.inputs["location"]: r.inputs["repositoryId"]
                    for r in prod_plan.custom("gcp:artifactregistry/repository:Repository")}
    pulls = [r.inputs for r in prod_plan.custom(REPO_MEMBER)]
    assert sorted((p["location"], p["repository"]) for p in pulls) == sorted(repositories.items())
    assert {(p["role"], p["member"]) for p in pulls} == {("roles/artifactregistry.reader", AGENT)}
    assert grants_to(prod_plan, AGENT) == {("location", loc, "roles/artifactregistry.reader") for loc in repositories}
    project_roles = {r.inputs["role"] for r in prod_plan.custom(PROJECT_MEMBER)}
    assert project_roles == {LOGS, METRICS}, "nothing project-wide beyond writing logs and metrics"


def test_keys_and_digests_reach_services_only_as_mounted_secrets(prod_plan):
    config = json.loads(stack_config("prod")["yolo-fleet:tenants"])
    digests = {"0" * 64} | {d for t in config.values() for d in t["key_sha256"]}
    for name, s in services(prod_plan).items():
        container = s["template"]["containers"][0]
        envs = {e["name"]: e.get("value") for e in container["envs"]}
        assert all(isinstance(v, str) for v in envs.values()), name
        assert not any(d in v for d in digests for v in envs.values()), f"{name}: a digest in a plain env var"
        volumes = {v["name"]: v for v in s["template"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        keys_dir, keys_file = envs["API_KEY_FILE"].rsplit("/", 1)
        assert volumes[mounts[keys_dir]]["secret"] == {"secret": "yolo-fleet-prod-api-keys",
                                                       "items": [{"path": keys_file, "version": "latest"}]}


def test_ingress_and_invoker_always_come_from_the_resolved_settings(dev_plan):
    facts = load_facts("dev")
    for name, s in services(dev_plan).items():
        settings = facts.settings_of(s["name"])
        assert (s["ingress"], s["invokerIamDisabled"]) == (INGRESS[settings.ingress], settings.public), name
    private = {"min_instances": 0, "max_instances": 2, "cpu": 1, "memory": "2Gi", "ingress": "internal",
               "public": False}
    plan = evaluate("dev", config_overrides={"yolo-fleet:settings": json.dumps(private)})
    access = {(s["ingress"], s["invokerIamDisabled"]) for n, s in services(plan).items() if n.startswith("demo")}
    assert access == {("INGRESS_TRAFFIC_INTERNAL_ONLY", False)}, "explicit even when it matches no default"


# --- the policies ------------------------------------------------------------------------------------------


def test_the_security_policies_are_mandatory_and_the_real_plans_pass_them(prod_plan, dev_plan):
    assert {name: SETTINGS[name].level for name in SECURITY} == dict.fromkeys(SECURITY, EnforcementLevel.MANDATORY)
    for plan in (prod_plan, dev_plan):
        for policy in SECURITY:
            assert only(policy, plan.resources, plan.stack) == {}, (plan.stack, policy)


def test_a_service_without_its_own_account_is_refused(prod_plan):
    iowa_account = services(prod_plan)["demo-iowa"]["template"]["serviceAccount"]
    unset = edited(prod_plan, "demo-tokyo", lambda i: i["template"].pop("serviceAccount"))
    [(where, message)] = only("dedicated-service-accounts", unset).items()
    assert where == "demo-tokyo" and "default compute service account" in message
    assert "declare it through components/service.py" in message
    compute = edited(prod_plan, "demo-tokyo",
                     lambda i: i["template"].update(serviceAccount="123456-compute@developer.gserviceaccount.com"))
    assert "runs as 123456-compute@developer.gserviceaccount.com, a project editor" in only(
        "dedicated-service-accounts", compute)["demo-tokyo"]
    assert iowa_account == services(prod_plan)["demo-tokyo"]["template"]["serviceAccount"], "one model, one account"
    shared_account = services(prod_plan)["shared-iowa"]["template"]["serviceAccount"]
    shared = edited(prod_plan, "demo-tokyo", lambda i: i["template"].update(serviceAccount=shared_account))
    found = only("dedicated-service-accounts", shared)
    assert sorted(found) == ["demo-tokyo", "shared-iowa"]
    assert (f"demo-tokyo (asia-northeast1): model demo shares service account {shared_account} with service "
            "shared-iowa-prod; only the endpoints of one model may share an account") in found["demo-tokyo"]
    other_model = edited(prod_plan, "demo-tokyo", lambda i: i["template"]["labels"].update(model="other"))
    found = only("dedicated-service-accounts", other_model)
    assert len(found) == 43 and f"model other shares service account {iowa_account} with model demo" in found[
        "demo-tokyo"]
    foreign = edited(prod_plan, "demo-tokyo", lambda i: i["template"].update(
        serviceAccount="runner@other-project.iam.gserviceaccount.com"))
    assert "which this stack does not declare" in only("dedicated-service-accounts", foreign)["demo-tokyo"]
    preview = edited(prod_plan, "demo-tokyo", lambda i: i["template"].update(serviceAccount=UNKNOWN_STRING_VALUE))
    assert only("dedicated-service-accounts", preview) == {}, "a new account's email: can't tell yet"


def test_a_broad_project_role_for_a_fleet_account_is_refused(prod_plan):
    iowa = f"serviceAccount:{services(prod_plan)['demo-iowa']['template']['serviceAccount']}"
    tokyo = f"serviceAccount:{services(prod_plan)['shared-iowa']['template']['serviceAccount']}"
    extra = [
        grant(PROJECT_MEMBER, "iowa-editor", project="my-gcp-project", role="roles/editor", member=iowa),
        grant("gcp:projects/iAMBinding:IAMBinding", "all-secrets", project="my-gcp-project",
              role=SECRET_READER, members=[tokyo, "serviceAccount:ci@my-gcp-project.iam.gserviceaccount.com"]),
        grant("gcp:projects/iAMPolicy:IAMPolicy", "policy", project="my-gcp-project", policyData=json.dumps(
            {"bindings": [{"role": "roles/storage.objectAdmin", "members": [iowa]}]})),
        grant(PROJECT_MEMBER, "ci-editor", project="my-gcp-project", role="roles/editor",
              member="serviceAccount:ci@my-gcp-project.iam.gserviceaccount.com"),  # not a fleet account
        grant(PROJECT_MEMBER, "new-account", project="my-gcp-project", role="roles/owner",
              member=UNKNOWN_STRING_VALUE),  # preview: can't tell yet
    ]
    found = only("service-account-project-roles", prod_plan.resources + extra)
    assert sorted(found) == ["all-secrets", "iowa-editor", "policy"]
    assert found["iowa-editor"].startswith(
        "iowa-editor: service account demo-prod@my-gcp-project.iam.gserviceaccount.com gets project role roles/editor;"
        " the fleet's service accounts may hold only roles/logging.logWriter, roles/monitoring.metricWriter")
    assert "roles/secretmanager.secretAccessor on its secret" in found["all-secrets"]
    assert "shared-iowa-prod@" in found["all-secrets"] and "roles/storage.objectAdmin" in found["policy"]


def test_the_allowed_project_roles_come_from_the_pack_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=deployable("dev")))
    levels = tmp_path / "PulumiPolicy.yaml"
    levels.write_text("config:\n  service-account-project-roles:\n    allowedProjectRoles: [roles/logging.logWriter]\n")
    assert main(["policy", "--stack", "dev", "--policy-config", str(levels), "--json"]) == 1
    violations = json.loads(capsys.readouterr().out)["violations"]
    assert {v["policy"] for v in violations} == {"service-account-project-roles"}
    assert sorted(v["resource"] for v in violations) == sorted(
        f"{account}-dev-metric-writer" for account in ["demo", "demo-raw", "shared-iowa", "shared-st-ghislain",
                                                       "shared-changhua-county"])


@pytest.mark.parametrize(("env", "value", "expected"), [
    ("ULTRALYTICS_API_KEY", "not-a-real-key", "is named like a secret and has a literal value"),
    ("DB_PASSWORD", "hunter2", "is named like a secret"),
    ("API_KEY_FILE_COPY", "/tmp/keys.txt", "not a path into a mounted secret"),
    ("KEY_DIGESTS", "0" * 64, "looks like a key"),
    ("SETTINGS", "AIza" + "x" * 35, "looks like a key"),
    ("GITHUB", "ghp_" + "a1B2" * 9, "looks like a key"),
    ("MAPS_TOKEN", {SECRET_SIG_KEY: SECRET_SIG, "value": "s3cr3t-value"}, "a Pulumi secret passed as a plain value"),
])
def test_a_secret_in_a_plain_env_var_is_refused_without_printing_it(prod_plan, env, value, expected):
    found = only("no-secrets-in-plain-env", edited(prod_plan, "demo-iowa", add_env(env, value)))
    assert list(found) == ["demo-iowa"]
    assert found["demo-iowa"].startswith(f"demo-iowa (us-central1): environment variable {env} ")
    assert expected in found["demo-iowa"] and "Secret Manager" in found["demo-iowa"]
    secret = value["value"] if isinstance(value, dict) else value
    assert secret not in found["demo-iowa"], "the message must not leak the value"


def test_random_tokens_look_like_keys_and_readable_values_do_not():
    keys = ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "i5Ih5NOT8N_l1lcI6ofCh-52dpyxutAVjrgWzmkrXWY",
            "tbvmW1SvoD87UOr/6PGFlD4GzqZ+4+H1", "37161024278796fd5b1f44731eaa9fa8", "xoxb-123-abc",
            "-----BEGIN PRIVATE KEY-----\nMIIE", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"]
    readable = ["YOLOv8n-Detection-Europe-West1-Prod", "demo-northern-virginia-us-east4-dedicated",
                "ConfigurationForTheModelServer2024Release", "/secrets/api-keys/sha256.txt", "8192",
                "europe-west1=https://eu.inference.example.com,asia-east1=https://ap.inference.example.com"]
    assert [k for k in keys if not looks_like_key(k)] == []
    assert [r for r in readable if looks_like_key(r)] == []


def test_secret_references_paths_into_secret_mounts_and_unknowns_pass(prod_plan):
    def change(inputs: dict[str, Any]) -> None:
        envs = inputs["template"]["containers"][0]["envs"]
        envs.append({"name": "HF_TOKEN", "valueSource": {"secretKeyRef": {"secret": "hf", "version": "latest"}}})
        envs.append({"name": "SESSION_SECRET", "value": UNKNOWN_STRING_VALUE})
        envs.append({"name": "TOKEN_FILE", "value": "/secrets/api-keys/other.txt"})
    assert only("no-secrets-in-plain-env", edited(prod_plan, "shared-iowa", change)) == {}


def test_ingress_and_invoker_must_be_set_and_ingress_match_the_settings(prod_plan):
    found = only("access-settings-explicit", edited(prod_plan, "demo-iowa", lambda i: i.pop("ingress")))
    assert "demo-iowa (us-central1): ingress is not set, so Cloud Run lets in traffic from anywhere" in found[
        "demo-iowa"]
    bypass = edited(prod_plan, "shared-iowa", lambda i: i.update(ingress="INGRESS_TRAFFIC_ALL"))
    assert only("access-settings-explicit", bypass) == {"shared-iowa": (
        "shared-iowa (us-central1): ingress is INGRESS_TRAFFIC_ALL but its settings say "
        "`ingress: internal-and-cloud-load-balancing` (INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER); deploy it through "
        "components/service.py or change `ingress` in regions.yaml (defaults or the region's overrides) or the "
        "stack's settings")}
    invoker = edited(prod_plan, "demo-tokyo", lambda i: i.pop("invokerIamDisabled"))
    assert "invoker_iam_disabled is not set" in only("access-settings-explicit", invoker)["demo-tokyo"]
    preview = edited(prod_plan, "shared-iowa", lambda i: i.update(ingress=UNKNOWN_STRING_VALUE))
    assert only("access-settings-explicit", preview) == {}


def test_artifact_registry_is_never_public_nor_writable_by_identities_that_pull(prod_plan):
    iowa = f"serviceAccount:{services(prod_plan)['demo-iowa']['template']['serviceAccount']}"
    repo = {"project": "my-gcp-project", "location": "us", "repository": "yolo-fleet"}
    extra = [
        grant(REPO_MEMBER, "public", role="roles/artifactregistry.reader", member="allUsers", **repo),
        grant(REPO_MEMBER, "iowa-writer", role="roles/artifactregistry.writer", member=iowa, **repo),
        grant("gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding", "agent-admin",
              role="roles/artifactregistry.repoAdmin", members=[AGENT], **repo),
        grant(REPO_MEMBER, "iowa-reads", role="roles/artifactregistry.reader", member=iowa, **repo),
        grant(REPO_MEMBER, "deployer-pushes", role="roles/artifactregistry.writer",
              member="serviceAccount:deployer@my-gcp-project.iam.gserviceaccount.com", **repo),
        grant(REPO_MEMBER, "unknown", role="roles/artifactregistry.admin", member=UNKNOWN_STRING_VALUE, **repo),
    ]
    found = only("artifact-registry-access", prod_plan.resources + extra)
    assert sorted(found) == ["agent-admin", "iowa-writer", "public"]
    assert found["public"].startswith("public: repository yolo-fleet grants roles/artifactregistry.reader to "
                                      "allUsers, so anyone could pull the server image")
    assert ("grants roles/artifactregistry.writer to demo-prod@my-gcp-project.iam.gserviceaccount.com, an identity "
            "that only pulls images; grant it roles/artifactregistry.reader at most") in found["iowa-writer"]
    assert "roles/artifactregistry.repoAdmin to service-PROJECT_NUMBER@serverless-robot-prod" in found["agent-admin"]
