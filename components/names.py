"""Physical names: every name or id a resource is created under, made here to the rules of its API.

A logical name (`demo-iowa`) and the stack become one readable name per API (`demo-iowa-prod`). When the
readable name breaks that API's rules (capitals, dots, too long, too short), the name keeps a readable,
cleaned-up prefix and ends in a short hash of the readable name, so the same input always gives the same
name and two different inputs never share one. The stack is in every name: two stacks in one project
never collide.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HASH_LEN = 6
# A stack name of up to 12 lowercase letters and digits appears in names as is; any other (capitals, '.',
# '_', '-', long) as its cleaned-up first 12 characters plus a hash of the exact stack name.
PLAIN_STACK = re.compile(r"[a-z0-9]{1,12}")
STACK_PREFIX = 12
PRODUCT = "yolo-fleet"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


@dataclass(frozen=True)
class Rule:
    """What one API accepts: a full-match pattern, a length range, characters that may replace others."""

    what: str
    pattern: re.Pattern[str]
    max_len: int
    min_len: int = 1
    allowed: str = "a-z0-9-"  # a regex character class body: what cleaning keeps
    first: str = "a-z"  # what the first character may be
    forbidden: re.Pattern[str] | None = None  # matches a name the API refuses despite the pattern

    def accepts(self, name: str) -> bool:
        return (self.min_len <= len(name) <= self.max_len and bool(self.pattern.fullmatch(name))
                and not (self.forbidden and self.forbidden.search(name)))

    def fit(self, readable: str) -> str:
        """`readable` if the API accepts it, else its cleaned-up prefix + '-' + a hash of `readable`."""
        if self.accepts(readable):
            return readable
        digest = short_hash(readable)
        text = re.sub(f"[^{self.allowed}]+", "-", readable.lower())
        while self.forbidden and self.forbidden.search(text):
            text = self.forbidden.sub("", text)
        text = re.sub(f"^[^{self.first}]+", "", re.sub("-{2,}", "-", text))
        text = text[:self.max_len - HASH_LEN - 1].rstrip("-_.")
        name = f"{text}-{digest}" if text else f"x{digest}"
        assert self.accepts(name), (self.what, readable, name)
        return name


_DNS = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
CLOUD_RUN = Rule("Cloud Run service name", _DNS, 49)
SERVICE_ACCOUNT = Rule("service account id", re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])"), 30, min_len=6)
SECRET = Rule("Secret Manager secret id", re.compile(r"[A-Za-z0-9_-]+"), 255, allowed="A-Za-z0-9_-",
              first="A-Za-z0-9_-")
BUCKET = Rule("Cloud Storage bucket name", re.compile(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]"), 63, min_len=3,
              first="a-z0-9", forbidden=re.compile(r"^goog|google"))
COMPUTE = Rule("compute resource name", _DNS, 63)
REPOSITORY = Rule("Artifact Registry repository id", _DNS, 63)
MONITORING_ID = Rule("Cloud Monitoring service or SLO id", _DNS, 63)
LABEL_KEY = Rule("label key", re.compile(r"[a-z][a-z0-9_-]*"), 63, allowed="a-z0-9_-")
LABEL_VALUE = Rule("label value", re.compile(r"[a-z0-9_-]*"), 63, min_len=0, allowed="a-z0-9_-",
                   first="a-z0-9_-")
RULES = (CLOUD_RUN, SERVICE_ACCOUNT, SECRET, BUCKET, COMPUTE, REPOSITORY, MONITORING_ID, LABEL_KEY, LABEL_VALUE)


def stack_token(stack: str) -> str:
    """How the stack appears in names: 'prod' -> 'prod', 'Stg.EU_1' -> 'stg-eu-1-<hash>'."""
    if PLAIN_STACK.fullmatch(stack):
        return stack
    cleaned = re.sub("[^a-z0-9]+", "-", stack.lower())[:STACK_PREFIX].strip("-")
    return f"{cleaned}-{short_hash(stack)}" if cleaned else short_hash(stack)


def cloud_run_service(logical: str, stack: str) -> str:
    """'demo-iowa', 'prod' -> 'demo-iowa-prod'."""
    return CLOUD_RUN.fit(f"{logical}-{stack_token(stack)}")


def service_account_id(owner: str, stack: str) -> str:
    """A model's or a shared region's account: 'demo', 'prod' -> 'demo-prod'."""
    return SERVICE_ACCOUNT.fit(f"{owner}-{stack_token(stack)}")


def secret_id(what: str, stack: str) -> str:
    """'api-keys', 'prod' -> 'yolo-fleet-prod-api-keys'."""
    return SECRET.fit(f"{PRODUCT}-{stack_token(stack)}-{what}")


def bucket_name(project: str, stack: str, region_id: str) -> str:
    """Globally unique: '<project>-<stack>-models-<region>'."""
    return BUCKET.fit(f"{project}-{stack_token(stack)}-models-{region_id}")


def compute_name(stack: str, *parts: str) -> str:
    """Load balancer parts: 'prod', 'shared-iowa' -> 'yolo-fleet-prod-shared-iowa'."""
    return COMPUTE.fit("-".join([PRODUCT, stack_token(stack), *parts]))


def model_backend(stack: str, model: str) -> str:
    """A model's backend service on the balancer (every region of the model): 'yolo-fleet-prod-model-demo'."""
    return compute_name(stack, "model", model)


def certificate_name(stack: str, domains: list[str]) -> str:
    """Named after its domains: a changed list is a new certificate, created before the old one goes."""
    return compute_name(stack, "cert", short_hash(",".join(domains)))


def repository_id(stack: str) -> str:
    """The stack's Artifact Registry repositories (one per multi-region): 'yolo-fleet-prod'."""
    return REPOSITORY.fit(f"{PRODUCT}-{stack_token(stack)}")


def monitoring_service_id(logical: str, stack: str) -> str:
    """A Cloud Monitoring custom service: 'yolo-fleet-demo-iowa-prod'."""
    return MONITORING_ID.fit(f"{PRODUCT}-{logical}-{stack_token(stack)}")


def slo_id(logical: str, stack: str, kind: str) -> str:
    """'demo-iowa', 'prod', 'latency' -> 'demo-iowa-prod-latency'."""
    return MONITORING_ID.fit(f"{logical}-{stack_token(stack)}-{kind}")


def label_value(text: str) -> str:
    """A label value: 'prod' -> 'prod', 'Stg.EU_1' -> 'stg-eu_1-<hash>'."""
    return LABEL_VALUE.fit(text)


def label_key(text: str) -> str:
    return LABEL_KEY.fit(text)
