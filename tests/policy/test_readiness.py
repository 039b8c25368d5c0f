"""A first real deploy: `fleet policy` refuses the examples' placeholders (no-placeholders) and alerts that notify
no one (mandatory in prod, a warning elsewhere), judged on the mocked program's real resources (the prod stack's over
the small catalog of tests/policy/conftest.py: its placeholders are the stock file's).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from pulumi_policy import EnforcementLevel
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from fleet.cli import main
from fleet.mocks import RecordedResource
from fleet.policy import Violation, run_policies
from fleet.program import ALERT_POLICY, PROJECT_DIR, SECRET_SIG, SECRET_SIG_KEY, Plan, evaluate
from policy.config import PolicySetting, load_pack_config
from policy.facts import load_facts
from policy.policies import POLICIES
from policy.readiness import EMPTY_SHA256, SECRET_VERSION, placeholder_digest
from tests.conftest import CATALOG_KEY, deployable

SETTINGS = load_pack_config()


def only(prefix: str, settings: dict[str, PolicySetting] | None = None) -> dict[str, PolicySetting]:
    """The pack's settings with every policy not named `prefix...` disabled (the others have their own tests)."""
    settings = settings or SETTINGS
    return {name: s if name.startswith(prefix) else PolicySetting(EnforcementLevel.DISABLED)
            for name, s in settings.items()}


def judged(plan: Plan, policy: str, settings: dict[str, PolicySetting] | None = None) -> list[Violation]:
    return run_policies(plan.resources, load_facts(plan.stack), only(policy, settings))


def ready(stack: str, **changes: object) -> Plan:
    """The stack as a user would deploy it, with `changes` (config key -> value) put back over it."""
    overrides = deployable(stack)
    overrides.update({key: value if isinstance(value, str) else json.dumps(value) for key, value in changes.items()})
    return evaluate(stack, config_overrides=overrides)


@pytest.fixture
def ready_prod(small_catalog: Path) -> Plan:
    return ready("prod", **{CATALOG_KEY: str(small_catalog)})


def test_the_stock_prod_stack_is_refused_naming_each_placeholder(small_prod):
    found = judged(small_prod, "no-placeholders")
    assert all(v.level == "mandatory" for v in found)
    messages = "\n".join(v.message for v in found)
    assert len(found) == 6  # project, the example.com domain, the API key digest, three tenants
    assert "gcp:project 'my-gcp-project' is the stock placeholder" in messages
    assert "pulumi config set gcp:project <your-project-id>" in messages
    assert ("inference.example.com, ap.inference.example.com, eu.inference.example.com, us.inference.example.com: "
            "under example.com, a name reserved for documentation and tests (RFC 2606)") in messages
    assert "key digest 00000000...0000 (one repeated character) in api-keys" in messages
    assert "secrets.token_urlsafe(32)" in messages and "sha256sum" in messages
    assert "pulumi config set --path 'yolo-fleet:api_key_sha256[0]' <digest>" in messages
    for owner, digit in (("acme", "1"), ("globex", "2"), ("initech", "3")):
        [tenant] = [v for v in found if f"tenant '{owner}'" in v.message]
        assert tenant.resource == "shared-tenants" and "one of the example tenants" in tenant.message
        assert f"key digest {digit * 8}...{digit * 4} is a placeholder" in tenant.message


def test_the_same_stack_with_a_users_values_passes(ready_prod):
    assert judged(ready_prod, "no-placeholders") == []


@pytest.mark.parametrize(("digest", "placeholder"), [
    (EMPTY_SHA256, True),
    ("0" * 64, True),
    ("f" * 64, True),
    ("0" * 63 + "1", False),  # one character off a repeated run: a digest like any other
    (hashlib.sha256(b" ").hexdigest(), False),
])
def test_placeholder_api_key_digests_are_refused_at_the_boundary(digest, placeholder):
    plan = ready("dev", **{"yolo-fleet:api_key_sha256": [hashlib.sha256(b"k").hexdigest(), digest]})
    found = judged(plan, "no-placeholders")
    assert bool(found) == placeholder
    if placeholder:
        [violation] = found
        assert violation.resource == "api-keys"
        assert f"key digest {digest[:8]}...{digest[-4:]} ({placeholder_digest(digest)}) in api-keys" in \
               violation.message


@pytest.mark.parametrize(("domain", "base"), [
    ("inference.example.net", "example.net"),
    ("example.org", "example.org"),
    ("api.vision.corp.test", "corp.test"),
    ("inference.myexample.com", None),
    ("inference.example.com.au", None),
    ("example-inference.com", None),
])
def test_a_shared_domain_nobody_can_own_is_refused(domain, base):
    found = judged(ready("dev", **{"yolo-fleet:shared_domain": domain}), "no-placeholders")
    if base is None:
        assert found == []
        return
    [violation] = found
    assert violation.message.startswith(f"{domain}, ") and f"under {base}, a name reserved" in violation.message
    assert "certificates for it never become active" in violation.message
    assert re.search(r"[(\s]lb[,)]", violation.message)  # the certificate and URL map that name it
    assert "pulumi config set yolo-fleet:shared_domain inference.<your-domain>" in violation.message


def test_an_alert_address_under_example_com_is_refused():
    channel = {"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@example.com"}}
    [violation] = judged(ready("dev", **{"yolo-fleet:notification_channels": [channel]}), "no-placeholders")
    assert violation.message.startswith("example.com: under example.com") and "alerts-0-email" in violation.message


@pytest.mark.parametrize("project", ["my-gcp-project", "my-gcp-project-staging"])
def test_the_placeholder_project_id_is_refused(project):
    [violation] = judged(ready("dev", **{"gcp:project": project}), "no-placeholders")
    assert violation.message.startswith(f"gcp:project '{project}' is the stock placeholder")
    assert "resources would be created in it" in violation.message
    assert violation.resource == "(stack)", "a stack setting, not the first resource that happens to name it"


def test_a_project_that_merely_resembles_the_placeholder_passes():
    assert judged(ready("dev", **{"gcp:project": "my-gcp-prod"}), "no-placeholders") == []


def test_example_tenants_and_tenants_with_placeholder_digests_are_named():
    tenants = {"acme": {"data_region": "us-central1", "key_sha256": [hashlib.sha256(b"acme").hexdigest()]},
               "northwind": {"data_region": "europe-west1", "key_sha256": [EMPTY_SHA256]},
               "tailspin": {"data_region": "asia-east1", "key_sha256": [hashlib.sha256(b"t").hexdigest()]}}
    plan = ready("dev", **{"yolo-fleet:tenants": tenants})
    found = {v.message.split("'")[1]: v.message for v in judged(plan, "no-placeholders")}
    assert sorted(found) == ["acme", "northwind"]
    assert "one of the example tenants" in found["acme"] and "placeholder" not in found["acme"]
    assert "key digest e3b0c442...b855 is a placeholder (the sha256 of the empty string)" in found["northwind"]
    # A real tenant that happens to be called acme: the pack's config says which names are examples.
    settings = {**SETTINGS, "no-placeholders": PolicySetting(EnforcementLevel.MANDATORY, {"exampleTenants": []})}
    assert [v.message.split("'")[1] for v in judged(plan, "no-placeholders", settings)] == ["northwind"]


def test_a_prebuilt_image_with_a_placeholder_digest_is_refused():
    plan = ready("dev", **{"yolo-fleet:image": "us-docker.pkg.dev/p/r/server@sha256:" + "0" * 64})
    [violation] = judged(plan, "no-placeholders")
    assert violation.message.startswith("digest 00000000...0000 (one repeated character) in ")
    assert "yolo-fleet:image" in violation.message and "api_key_sha256" not in violation.message
    assert all(r.name in violation.message for r in plan.custom("gcp:cloudrunv2/service:Service"))  # all deploy it


def secret_data(plan: Plan, name: str) -> RecordedResource:
    return next(r for r in plan.custom(SECRET_VERSION) if r.name == name)


def test_digests_are_found_inside_pulumi_secrets_and_in_plain_payloads(small_prod):
    keys = secret_data(small_prod, "api-keys")
    assert keys.inputs["secretData"][SECRET_SIG_KEY] == SECRET_SIG  # the plan carries it as a Pulumi secret
    # The engine hands the pack a secret's plain value: judged the same.
    plain = [replace(r, inputs={**r.inputs, "secretData": r.inputs["secretData"]["value"]})
             if r.type == SECRET_VERSION else r for r in small_prod.resources]
    found = run_policies(plain, load_facts("prod"), only("no-placeholders"))
    assert sorted(v.resource for v in found) == sorted(v.resource for v in judged(small_prod, "no-placeholders"))


def test_payloads_unknown_during_preview_are_not_violations(ready_prod):
    unknown = [replace(r, inputs={**r.inputs, "secretData": UNKNOWN_STRING_VALUE}) if r.type == SECRET_VERSION else r
               for r in ready_prod.resources]
    assert run_policies(unknown, load_facts("prod"), only("no-placeholders")) == []


def without_channels(plan: Plan, keep: int = 0) -> list[RecordedResource]:
    """The plan's resources with every alert policy but the first `keep` sending nowhere."""
    alerts = [r for r in plan.resources if r.type == ALERT_POLICY]
    silenced = {id(r) for r in alerts[keep:]}
    return [replace(r, inputs={**copy.deepcopy(r.inputs), "notificationChannels": []}) if id(r) in silenced else r
            for r in plan.resources]


def channel_violations(resources: list[RecordedResource], stack: str,
                       settings: dict[str, PolicySetting] | None = None) -> list[Violation]:
    return run_policies(resources, load_facts(stack), only("alert-notifications", settings))


def test_alerts_that_notify_no_one_are_a_violation_in_prod(ready_prod):
    alerts = [r for r in ready_prod.resources if r.type == ALERT_POLICY]
    assert all(r.inputs["notificationChannels"] for r in alerts)  # the user's channel reaches every alert
    assert channel_violations(ready_prod.resources, "prod") == []
    [violation] = channel_violations(without_channels(ready_prod), "prod")
    assert (violation.policy, violation.level) == ("alert-notifications-in-prod", "mandatory")
    assert violation.message.startswith(f"{len(alerts)} of {len(alerts)} alert policies notify no one")
    assert "pulumi config set --path 'yolo-fleet:notification_channels[0].type' email" in violation.message
    assert "Pulumi.prod.yaml" in violation.message


def test_one_silent_alert_is_enough(ready_prod):
    alerts = [r for r in ready_prod.resources if r.type == ALERT_POLICY]
    [violation] = channel_violations(without_channels(ready_prod, keep=len(alerts) - 1), "prod")
    assert violation.message.startswith(f"1 of {len(alerts)} alert policies notify no one")
    assert channel_violations(without_channels(ready_prod, keep=len(alerts)), "prod") == []


def test_the_stock_stacks_alerts_notify_no_one_mandatory_in_prod_advisory_in_dev(small_prod, dev_plan):
    [prod] = channel_violations(small_prod.resources, "prod")
    assert (prod.policy, prod.level) == ("alert-notifications-in-prod", "mandatory")
    [dev] = channel_violations(dev_plan.resources, "dev")
    assert (dev.policy, dev.level) == ("alert-notifications", "advisory")
    assert "in the dev stack" in dev.message and "Pulumi.dev.yaml" in dev.message
    assert channel_violations(ready("dev").resources, "dev") == []


def test_which_stacks_count_as_prod_comes_from_the_pack_config(dev_plan):
    settings = {**SETTINGS,
                "alert-notifications-in-prod": PolicySetting(EnforcementLevel.MANDATORY, {"stacks": ["prod", "dev"]}),
                "alert-notifications": PolicySetting(EnforcementLevel.ADVISORY, {"exceptStacks": ["prod", "dev"]})}
    [violation] = channel_violations(dev_plan.resources, "dev", settings)
    assert (violation.policy, violation.level) == ("alert-notifications-in-prod", "mandatory")


def test_channels_unknown_during_preview_are_not_violations(ready_prod):
    unknown = [replace(r, inputs={**r.inputs, "notificationChannels": UNKNOWN_STRING_VALUE})
               if r.type == ALERT_POLICY else r for r in ready_prod.resources]
    assert channel_violations(unknown, "prod") == []


def test_fleet_policy_on_the_stock_prod_stack_exits_1_listing_what_to_replace(small_catalog, capsys):
    assert main(["policy", "--stack", "prod", "--catalog", str(small_catalog), "--json"]) == 1
    violations = json.loads(capsys.readouterr().out)["violations"]
    assert sorted({(v["policy"], v["level"]) for v in violations}) == [
        ("alert-notifications-in-prod", "mandatory"), ("no-placeholders", "mandatory")]


def test_fleet_policy_passes_the_stock_prod_stack_once_a_user_sets_their_values(small_catalog, monkeypatch, capsys):
    monkeypatch.setattr("fleet.policy.evaluate", functools.partial(evaluate, config_overrides=deployable("prod")))
    assert main(["policy", "--stack", "prod", "--catalog", str(small_catalog)]) == 0
    assert f"all {len(POLICIES)} policies pass" in capsys.readouterr().out


def test_the_stock_files_and_the_readme_say_how_to_replace_the_placeholders():
    prod = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    deploy = (PROJECT_DIR / "README.md").read_text().split("## Deploying for real")[1].split("\n## ")[0]
    for text in (prod, deploy):
        assert "secrets.token_urlsafe(32)" in text and 'printf %s "$KEY" | sha256sum' in text
        assert "fleet policy" in text
    for step in ("pulumi config set gcp:project", "pulumi config set --path 'yolo-fleet:api_key_sha256[0]'",
                 "pulumi config set yolo-fleet:shared_domain", "yolo-fleet:notification_channels[0]",
                 "yolo-fleet:tenants"):
        assert step in deploy, step


@pytest.mark.parametrize("address", ["<your on-call address>", "ONCALL@MY-DOMAIN"])
def test_an_alert_address_pasted_from_the_docs_is_refused(address):
    """Pulumi.prod.yaml's comment and README's command, pasted as they are: the plan is valid, the alerts go nowhere."""
    channel = {"type": "email", "display_name": "On-call", "labels": {"email_address": address}}
    [violation] = judged(ready("dev", **{"yolo-fleet:notification_channels": [channel]}), "no-placeholders")
    assert violation.message.startswith(f"notification channel alerts-0-email: email_address '{address}' is the docs' "
                                        "placeholder, so its alerts reach no one")


def test_a_real_alert_address_passes():
    channel = {"type": "email", "display_name": "On-call", "labels": {"email_address": "oncall@northwind-vision.io"}}
    assert judged(ready("dev", **{"yolo-fleet:notification_channels": [channel]}), "no-placeholders") == []


def test_the_fix_for_a_placeholder_channel_names_that_channel_not_the_first():
    good = {"type": "email", "display_name": "Ops", "labels": {"email_address": "ops@northwind-vision.io"}}
    pasted = {"type": "email", "display_name": "On-call", "labels": {"email_address": "<your on-call address>"}}
    [violation] = judged(ready("dev", **{"yolo-fleet:notification_channels": [good, pasted]}), "no-placeholders")
    assert "'yolo-fleet:notification_channels[1].labels.email_address'" in violation.message
