"""Is the stack ready for a real deploy: nothing left from the examples, and alerts that reach someone.

The stock stack files and the README carry placeholders so that `make plan` works out of the box: the
project id `my-gcp-project`, key digests no key hashes to (all one character, or the sha256 of the empty
string), `example.com` domains (RFC 2606 reserves them: nobody can own one) and the example tenants. Deployed,
they give services nobody can call and certificates that never become active. They are found in the
resources themselves (secret payloads included, which is where key digests live), so what is judged is what
would be deployed, whatever config produced it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from components.stack_config import PLACEHOLDER_PROJECT
from fleet.program import ALERT_POLICY
from fleet.props import UNKNOWN, dig
from policy.facts import StackFacts

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HEX_DIGEST = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{64}(?![0-9a-fA-F])")
# A host under a name RFC 2606 reserves (example.com/.net/.org, or the .test, .example, .invalid and .localhost
# top-level domains), never part of a longer name such as myexample.com or example.com.au. Group 2: the base.
RESERVED_DOMAIN = re.compile(r"(?<![a-z0-9.-])((?:[a-z0-9-]+\.)*(example\.(?:com|net|org)"
                             r"|[a-z0-9-]+\.(?:test|example|invalid|localhost)))(?![a-z0-9-]|\.[a-z0-9])",
                             re.IGNORECASE)
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
# The docs' own placeholders, pasted as they are: `<your on-call address>`, `ONCALL@MY-DOMAIN`.
DOC_PLACEHOLDER = re.compile(r"<[^<>]+>|\bMY-[A-Z-]+\b")
MAKE_KEY = ("KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'); "
            "printf %s \"$KEY\" | sha256sum | cut -d' ' -f1")
CHANNEL_FIX = ("`pulumi config set --path 'yolo-fleet:notification_channels[0].type' email`, "
               "`pulumi config set --path 'yolo-fleet:notification_channels[0].display_name' On-call`, "
               "`pulumi config set --path 'yolo-fleet:notification_channels[0].labels.email_address' "
               "<your on-call address>` (slack, pagerduty, sms, webhook_tokenauth, pubsub and google_chat channels "
               "work too, with their labels)")

Options = Mapping[str, Any]


def placeholder_digest(digest: str) -> str | None:
    """Why this sha256 hex digest is a placeholder no key hashes to, or None."""
    if digest == EMPTY_SHA256:
        return "the sha256 of the empty string"
    if len(set(digest)) == 1:
        return "one repeated character"
    return None


def _strings(node: Any) -> Iterator[str]:
    """Every known string in a resource's inputs; a Pulumi secret's value is walked like any other."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key in list(node):
            yield from _strings(dig(node, key))
    elif isinstance(node, Sequence):
        for i in range(len(node)):
            yield from _strings(dig(node, i))


def _tenants_file(text: str) -> dict[str, list[str]] | None:
    """The shared API's tenants file (`tenants: {owner: {key_sha256: [...]}}`) as owner -> digests, else None."""
    if not text.startswith("tenants:"):
        return None
    try:
        tenants = (yaml.safe_load(text) or {}).get("tenants")
    except yaml.YAMLError:
        return None
    if not isinstance(tenants, dict):
        return None
    owners = {}
    for owner, spec in tenants.items():
        keys = spec.get("key_sha256") if isinstance(spec, dict) else None
        owners[str(owner)] = [str(d) for d in keys] if isinstance(keys, list) else []
    return owners


def listing(names: Sequence[str], most: int = 8) -> str:
    """The first `most` names, then how many more: a message stays readable whatever the stack's size."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _names(resources: Sequence[Any], most: int = 8) -> str:
    return listing(list(dict.fromkeys(r.name for r in resources)), most)


def _short(digest: str) -> str:
    return f"{digest[:8]}...{digest[-4:]}"


def check_placeholders(resources: list[Any], facts: StackFacts, options: Options) -> Iterator[tuple[str, str]]:
    """(message, urn) for each placeholder the stack would deploy: project, key digests, example domains, tenants."""
    stack_file = f"Pulumi.{facts.stack}.yaml"
    examples = set(options.get("exampleTenants", ()))
    projects: dict[str, list[Any]] = defaultdict(list)
    hosts: dict[str, set[str]] = defaultdict(set)  # reserved base domain -> hosts under it
    named_by: dict[str, list[Any]] = defaultdict(list)  # reserved base domain -> resources naming it
    digests: dict[str, list[Any]] = defaultdict(list)
    tenants: dict[str, tuple[Any, list[str]]] = {}
    for r in resources:
        project = dig(r.props, "project")
        if isinstance(project, str) and project.startswith(PLACEHOLDER_PROJECT):
            projects[project].append(r)
        for text in _strings(r.props):
            for host, base in RESERVED_DOMAIN.findall(text):
                hosts[base.lower()].add(host.lower())
                named_by[base.lower()].append(r)
            owners = _tenants_file(text)
            for owner, keys in (owners or {}).items():
                bad = [d for d in keys if placeholder_digest(d)]
                if owner in examples or bad:
                    tenants[owner] = (r, bad)
            for digest in HEX_DIGEST.findall(text) if owners is None else ():
                if placeholder_digest(digest):
                    digests[digest].append(r)
    for project, found in projects.items():
        yield (f"gcp:project '{project}' is the stock placeholder, not your project ({len(found)} resources would be "
               f"created in it); set yours: `pulumi config set gcp:project <your-project-id>` ({stack_file})",
               "")  # the stack's setting, not one resource's: reported on the stack, as "(stack)"
    for base, found in named_by.items():
        listed = ", ".join(sorted(hosts[base], key=lambda h: (len(h), h)))
        yield (f"{listed}: under {base}, a name reserved for documentation and tests (RFC 2606) that nobody can "
               f"own, so its DNS never reaches this stack and certificates for it never become active "
               f"({_names(found)}); set yolo-fleet:shared_domain (and yolo-fleet:domain, if set) in {stack_file} to a "
               "domain you control (`pulumi config set yolo-fleet:shared_domain inference.<your-domain>`), and any "
               "address under it",
               found[0].urn)
    for digest, found in digests.items():
        what = f"digest {_short(digest)} ({placeholder_digest(digest)}) in {_names(found)}"
        if all(r.resource_type == SECRET_VERSION for r in found):  # an API key digest, in its secret
            yield (f"key {what}: no key hashes to it, so nobody can call with it; make a key and use its digest: "
                   f"`{MAKE_KEY}`, then `pulumi config set --path 'yolo-fleet:api_key_sha256[0]' <digest>` "
                   f"({stack_file}; keep the key in your secret store, only its digest goes in the stack)",
                   found[0].urn)
        else:
            yield (f"{what}: a placeholder that no real image or key has; set the real one in {stack_file} "
                   "(yolo-fleet:image takes an image by the digest its registry reports)", found[0].urn)
    for r in resources:
        labels = dig(r.props, "labels") if r.resource_type == CHANNEL else None
        if not isinstance(labels, Mapping):  # not a channel, or labels not known yet
            continue
        index = re.match(r"alerts-(\d+)-", r.name)  # components/monitoring.py names them by their place
        for label in list(labels):
            value = dig(labels, label)
            if isinstance(value, str) and DOC_PLACEHOLDER.search(value):
                yield (f"notification channel {r.name}: {label} '{value}' is the docs' placeholder, so its alerts "
                       f"reach no one; set the real one in {stack_file}: `pulumi config set --path "
                       f"'yolo-fleet:notification_channels[{index[1] if index else 0}].labels.{label}' "
                       f"<the real {label}>`", r.urn)
    for owner, (r, bad) in sorted(tenants.items()):
        why = [f"one of the example tenants (exampleTenants in policy/PulumiPolicy.yaml: remove '{owner}' there "
               "if it really is a tenant)"] if owner in examples else []
        why += [f"key digest {_short(d)} is a placeholder ({placeholder_digest(d)}) no key hashes to" for d in bad]
        yield (f"tenant '{owner}' in {r.name}: {'; '.join(why)}; list your own tenants under yolo-fleet:tenants in "
               f"{stack_file}, each key_sha256 the digest of a key you made (`{MAKE_KEY}`)", r.urn)


def _silent_alerts(resources: list[Any], facts: StackFacts) -> Iterator[tuple[str, str]]:
    alerts = [r for r in resources if r.resource_type == ALERT_POLICY]
    silent = [r for r in alerts if dig(r.props, "notificationChannels") is not UNKNOWN
              and not dig(r.props, "notificationChannels")]
    if silent:
        yield (f"{len(silent)} of {len(alerts)} alert policies notify no one (no notification channel: "
               f"{_names(silent)}), so in the {facts.stack} stack an endpoint can fail and nobody is told; add a "
               f"channel to yolo-fleet:notification_channels in Pulumi.{facts.stack}.yaml: {CHANNEL_FIX}",
               silent[0].urn)


def check_alert_notifications_in(resources: list[Any], facts: StackFacts,
                                 options: Options) -> Iterator[tuple[str, str]]:
    """Alerts without a channel, in the stacks listed in `stacks` (prod: a mandatory policy)."""
    if facts.stack in options.get("stacks", ()):
        yield from _silent_alerts(resources, facts)


def check_alert_notifications_except(resources: list[Any], facts: StackFacts,
                                     options: Options) -> Iterator[tuple[str, str]]:
    """Alerts without a channel, in every stack but those in `exceptStacks` (which the mandatory policy judges)."""
    if facts.stack not in options.get("exceptStacks", ()):
        yield from _silent_alerts(resources, facts)
