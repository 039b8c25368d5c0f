"""The pack's security rules: who each service runs as, what those identities may do, and where secrets live.

Each service runs as an account declared in the stack (its model's, shared by that model's endpoints alone,
or a shared region's own); those accounts hold at most the allowed
project roles (writing logs and metrics) and get everything else on the one resource they read; no plain
environment variable carries a secret; ingress and the invoker check are set on purpose; Artifact
Registry repositories are neither public nor writable by the identities that only pull. As everywhere
in the pack, a value unknown during preview (a new account's email) is "can't tell yet".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import UnknownValueError

from components.service import INGRESS
from fleet.program import CLOUD_RUN, SECRET_SIG, SECRET_SIG_KEY
from fleet.props import UNKNOWN, dig, known
from policy.facts import StackFacts

ACCOUNT = "gcp:serviceaccount/account:Account"
PROJECT_IAM = frozenset({"gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding",
                         "gcp:projects/iAMPolicy:IAMPolicy"})
REPOSITORY_IAM = frozenset({"gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
                            "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding",
                            "gcp:artifactregistry/repositoryIamPolicy:RepositoryIamPolicy"})
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
# The accounts a service gets when none is named: Compute Engine's and App Engine's defaults (project editors
# unless an organization policy stopped that grant).
DEFAULT_ACCOUNTS = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$|@appspot\.gserviceaccount\.com$")
CLOUD_RUN_AGENT = re.compile(r"^serviceAccount:service-[^@]+@serverless-robot-prod\.iam\.gserviceaccount\.com$")
REPOSITORY_READ_ROLES = frozenset({"roles/artifactregistry.reader"})
# Environment variable names that say "secret": KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL(S) as a word.
SECRET_NAME = re.compile(r"(^|_)(API_?KEYS?|KEYS?|TOKENS?|SECRETS?|PASSWORDS?|PASSWD|CREDENTIALS?)(_|$)", re.I)
# Values that look like a key whatever the variable is called.
KEY_LIKE = (
    re.compile(r"^[0-9a-fA-F]{32,}$"),  # hex tokens and digests (an API key's sha256 included)
    re.compile(r"AIza[0-9A-Za-z_-]{35}"),  # Google API key
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),  # PEM private keys, service account JSON keys
    re.compile(r"^eyJ[\w-]+\.eyJ[\w-]+\."),  # JWTs
    re.compile(r"^(sk|rk)_(live|test)_\w{16,}$|^gh[pousr]_\w{30,}$|^xox[abpors]-"),  # Stripe, GitHub, Slack
)
BASE64 = re.compile(r"^[A-Za-z0-9+/_-]{32,}={0,2}$")


def looks_like_key(value: str) -> bool:
    """A known key format, or a long base64 token: random ones are over a third capitals and digits, while
    readable names of that length ('YOLOv8n-Detection-Europe-West1-Prod') are mostly lowercase."""
    if any(p.search(value) for p in KEY_LIKE):
        return True
    if not BASE64.match(value) or value.startswith("/"):
        return False
    dense = sum(c.isupper() or c.isdigit() for c in value)
    return dense >= 0.35 * len(value) and any(c.islower() for c in value)


Grant = tuple[str, str]  # (role, member)


def iam_grants(resource_type: str, props: Any) -> list[Grant] | None:
    """The (role, member) pairs an IAM member, binding or policy resource grants; None while any is unknown."""
    try:
        if resource_type.lower().endswith("iampolicy"):
            data = dig(props, "policyData")
            if not isinstance(data, str):
                return None
            bindings = json.loads(data).get("bindings", [])
            return [(b.get("role"), m) for b in bindings for m in b.get("members", [])]
        role, member, members = dig(props, "role"), dig(props, "member"), dig(props, "members")
        if not known(role, member, members):
            return None
        return [(role, m) for m in ([member] if member else list(members or []))]
    except (UnknownValueError, ValueError, AttributeError):
        return None


class FleetAccounts:
    """The service accounts of this stack: those it declares and those its Cloud Run services run as."""

    def __init__(self, resources: list[Any]) -> None:
        self.emails: set[str] = set()
        self.ids: set[str] = set()  # accounts declared without a project: the provider's project, any domain
        for r in resources:
            if r.resource_type == ACCOUNT:
                account_id, project = dig(r.props, "accountId"), dig(r.props, "project")
                if isinstance(account_id, str) and isinstance(project, str):
                    self.emails.add(f"{account_id}@{project}.iam.gserviceaccount.com")
                elif isinstance(account_id, str) and project is None:
                    self.ids.add(account_id)
        self.declared = set(self.emails)
        self.emails |= {e for e in (_runs_as(r) for r in resources if r.resource_type == CLOUD_RUN)
                        if isinstance(e, str) and e}

    def is_declared(self, email: str) -> bool:
        local, _, domain = email.partition("@")
        return email in self.declared or (local in self.ids and domain.endswith(".iam.gserviceaccount.com"))

    def of(self, member: str) -> str | None:
        """The email if `member` is one of the stack's service accounts, else None."""
        kind, _, email = member.partition(":")
        ours = kind == "serviceAccount" and (email in self.emails or self.is_declared(email))
        return email if ours else None


def _runs_as(r: Any) -> Any:
    return dig(r.props, "template", "serviceAccount")


def _where(r: Any) -> str:
    location = dig(r.props, "location")
    return f"{r.name} ({location})" if isinstance(location, str) else r.name


def _account_owner(r: Any) -> Any:
    """Who may run as a service's account: its model, for a dedicated endpoint (every endpoint of a model reads
    the same secret, so they share the model's account), else the service alone. UNKNOWN while unknown."""
    labels = dig(r.props, "template", "labels")
    if labels is UNKNOWN:
        return UNKNOWN
    model = dig(labels, "model")
    if dig(labels, "role") == "dedicated" and isinstance(model, str) and model:
        return f"model {model}"
    name = dig(r.props, "name")
    return f"service {name if isinstance(name, str) else r.name}"


def check_dedicated_accounts(resources: list[Any], facts: StackFacts,
                             options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every Cloud Run service runs as an account this stack declares: its model's (shared by that model's
    endpoints alone) or, for a shared region, its own."""
    accounts = FleetAccounts(resources)
    services = [r for r in resources if r.resource_type == CLOUD_RUN]
    owners: dict[str, set[str]] = {}
    for r in services:
        email = _runs_as(r)
        if email is UNKNOWN:
            continue  # a new account's email: can't tell yet
        if not email or DEFAULT_ACCOUNTS.search(email):
            who = email or "the project's default compute service account (template.service_account is unset)"
            yield (f"{_where(r)}: runs as {who}, a project editor unless someone removed that; give it its own "
                   "service account (declare it through components/service.py, which does)", r.urn)
        elif not accounts.is_declared(email):
            yield (f"{_where(r)}: runs as {email}, which this stack does not declare, so other workloads may share "
                   "it and its grants; give the service its own account (components/service.py declares one)", r.urn)
        elif (owner := _account_owner(r)) is not UNKNOWN:
            owners.setdefault(email, set()).add(owner)
    for r in services:
        email, owner = _runs_as(r), _account_owner(r)
        others = sorted(owners.get(email, set()) - {owner}) if isinstance(email, str) else []
        if others and owner is not UNKNOWN:
            yield (f"{_where(r)}: {owner} shares service account {email} with {', '.join(others)}; only the "
                   "endpoints of one model may share an account (its model's), so a grant or a leaked token "
                   "reaches one model's services or one shared region only", r.urn)


def check_account_project_roles(resources: list[Any], facts: StackFacts,
                                options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The stack's service accounts hold only the allowed project roles; the rest is granted per resource."""
    accounts = FleetAccounts(resources)
    allowed = list(options.get("allowedProjectRoles", ()))
    for r in resources:
        if r.resource_type not in PROJECT_IAM:
            continue
        for role, member in iam_grants(r.resource_type, r.props) or []:
            email = accounts.of(member)
            if email and role not in allowed:
                yield (f"{r.name}: service account {email} gets project role {role}; the fleet's service accounts "
                       f"may hold only {', '.join(allowed) or 'no role'} at project level. Grant what it reads on "
                       "that one resource instead (roles/secretmanager.secretAccessor on its secret, "
                       "roles/storage.objectViewer on its bucket), or change allowedProjectRoles in "
                       "policy/PulumiPolicy.yaml in a reviewed change", r.urn)


def _listed(node: Any) -> list[Any]:
    """The items of a known list; [] when absent or unknown."""
    try:
        return list(node) if isinstance(node, Sequence) and not isinstance(node, str) else []
    except UnknownValueError:
        return []


def _secret_mounts(template: Any) -> list[str]:
    """Mount paths of the template's secret volumes: a file there is a mounted secret, not a literal."""
    secret = {dig(v, "name") for v in _listed(dig(template, "volumes")) if dig(v, "secret")}
    paths = []
    for container in _listed(dig(template, "containers")):
        for mount in _listed(dig(container, "volumeMounts")):
            path = dig(mount, "mountPath")
            if dig(mount, "name") in secret and isinstance(path, str):
                paths.append(path.rstrip("/") + "/")
    return paths


def check_no_secret_in_env(r: Any, facts: StackFacts, options: Mapping[str, Any]) -> Iterator[str]:
    """No plain `env` value is, or is named like, a secret (a path into a mounted secret is fine)."""
    template = dig(r.props, "template")
    mounts = _secret_mounts(template)
    fix = ("store it in Secret Manager and mount it as a file (as API_KEY_FILE is) or reference it with "
           "value_source.secret_key_ref")
    for container in _listed(dig(template, "containers")):
        for env in _listed(dig(container, "envs")):
            name, value = dig(env, "name"), dig(env, "value")
            if not isinstance(name, str) or value is None or value is UNKNOWN:
                continue
            if isinstance(value, Mapping) and dig(value, SECRET_SIG_KEY) == SECRET_SIG:
                yield (f"{_where(r)}: environment variable {name} is a Pulumi secret passed as a plain value, which "
                       f"Cloud Run keeps readable in the revision; {fix}")
            elif isinstance(value, str) and looks_like_key(value):
                yield f"{_where(r)}: environment variable {name} has a literal value that looks like a key; {fix}"
            elif isinstance(value, str) and SECRET_NAME.search(name) and not any(
                    value.startswith(m) for m in mounts):
                yield (f"{_where(r)}: environment variable {name} is named like a secret and has a literal value "
                       f"(not a path into a mounted secret); {fix}")


def check_access_settings(r: Any, facts: StackFacts, options: Mapping[str, Any]) -> Iterator[str]:
    """Ingress and the invoker check are set, never provider defaults; ingress is what the settings resolve."""
    ingress, disabled, service = dig(r.props, "ingress"), dig(r.props, "invokerIamDisabled"), dig(r.props, "name")
    settings = facts.settings_of(service) if isinstance(service, str) else None
    where = ("regions.yaml (defaults or the region's overrides) or the stack's settings"
             if settings else "the service's settings")
    if ingress is None:
        yield (f"{_where(r)}: ingress is not set, so Cloud Run lets in traffic from anywhere "
               f"(INGRESS_TRAFFIC_ALL); set it from `ingress` in {where}")
    elif known(ingress) and settings is not None and ingress != INGRESS[settings.ingress]:
        yield (f"{_where(r)}: ingress is {ingress} but its settings say `ingress: {settings.ingress}` "
               f"({INGRESS[settings.ingress]}); deploy it through components/service.py or change `ingress` in {where}")
    if disabled is None:
        yield (f"{_where(r)}: invoker_iam_disabled is not set, so whether callers need roles/run.invoker is left to "
               f"the provider default; set it from `public` in {where}")


def check_repository_access(resources: list[Any], facts: StackFacts,
                            options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Artifact Registry repositories: nobody anonymous, and the identities that pull may only read."""
    accounts = FleetAccounts(resources)
    for r in resources:
        if r.resource_type not in REPOSITORY_IAM:
            continue
        repository = dig(r.props, "repository")
        what = f"repository {repository}" if isinstance(repository, str) else "its repository"
        for role, member in iam_grants(r.resource_type, r.props) or []:
            if member in PUBLIC_MEMBERS:
                yield (f"{r.name}: {what} grants {role} to {member}, so anyone could pull the server image (or "
                       "push to it); remove the grant: Cloud Run pulls as its service agent", r.urn)
            elif role not in REPOSITORY_READ_ROLES and (accounts.of(member) or CLOUD_RUN_AGENT.match(member)):
                yield (f"{r.name}: {what} grants {role} to {member.partition(':')[2]}, an identity that only pulls "
                       f"images; grant it {', '.join(sorted(REPOSITORY_READ_ROLES))} at most (pushing is the "
                       "deployer's job)", r.urn)
