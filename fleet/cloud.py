"""What `fleet monitor` and `fleet logs` share: the stack's endpoints, its project, and a Google API client."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.errors import FleetError
from components.layout import FleetLayout
from components.stack_config import PROJECT_ID, PROJECT_ID_RULE
from fleet.program import stack_config
from fleet.program import stack_layout as read_layout

# Google's client libraries warn on import, once per library, that they will stop supporting this Python in a
# future release: nothing an operator of `fleet` can act on, and it buries the command's own output.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")

NO_CREDENTIALS = ("no Google credentials: run `gcloud auth application-default login`, "
                  "or set GOOGLE_APPLICATION_CREDENTIALS")


@dataclass
class Endpoint:
    name: str  # the endpoint's name (`demo-iowa`): what users pass to --endpoint and read in reports
    service: str  # its Cloud Run service (`demo-iowa-prod`): what Cloud Monitoring and Logging know it by
    region: str
    role: str


def stack_layout(args: argparse.Namespace) -> FleetLayout:
    """The stack's services as its program resolves them (`plan_fleet`, which `__main__.py` declares one Cloud Run
    service for each of), without evaluating the program: the same list for a fraction of a second instead of the
    ~2-4 s that declaring ~400 resources under mocks takes."""
    return read_layout(args.stack, catalog=args.catalog).layout


def stack_endpoints(args: argparse.Namespace) -> list[Endpoint]:
    """The Cloud Run services the stack's program declares (its own layout, not a second list), by name;
    --endpoint narrows them to one."""
    endpoints = sorted((Endpoint(s.name, s.service_name, s.region.id, s.role) for s in stack_layout(args).services),
                       key=lambda e: e.name)
    if not args.endpoint:
        return endpoints
    chosen = [e for e in endpoints if args.endpoint in (e.name, e.service)]
    if not chosen:
        known = {**{e.service: e.name for e in endpoints}, **{e.name: e.name for e in endpoints}}
        close = list(dict.fromkeys(known[m] for m in difflib.get_close_matches(args.endpoint, known, n=4, cutoff=0.75)))
        hint = (f"did you mean {' or '.join(close)}?" if close
                else f"{len(endpoints)} services, e.g. {', '.join(sorted(e.name for e in endpoints)[:5])}")
        raise FleetError(f"--endpoint {args.endpoint}: no such endpoint or Cloud Run service in stack {args.stack}; "
                         f"{hint}")
    return chosen


def project(args: argparse.Namespace) -> str:
    """--project (a valid project id: the commands paste it into API paths and shell lines), else the stack's
    gcp:project."""
    if args.project is not None:
        if not re.fullmatch(PROJECT_ID, args.project):
            raise FleetError(f"--project {args.project!r}: not {PROJECT_ID_RULE}")
        return str(args.project)
    found = stack_config(args.stack).get("gcp:project")
    if not found:
        raise FleetError(f"no project: set gcp:project in Pulumi.{args.stack}.yaml or pass --project")
    return found


# Transient errors (UNAVAILABLE, 429) are retried this long per call before the call is reported as failed.
RETRY_SECONDS = 20.0
QUERY_TIMEOUT_SECONDS = 30.0


def call_limits() -> dict[str, Any]:
    """`retry` and `timeout` for one Google API call: an unreachable API is an answer in seconds, not a minute."""
    from google.api_core.retry import Retry

    return {"retry": Retry(initial=0.2, maximum=2.0, timeout=RETRY_SECONDS), "timeout": QUERY_TIMEOUT_SECONDS}


def google_client(client_type: type, transport_type: type, endpoint_variable: str) -> Any:
    """`client_type` on an insecure channel to $endpoint_variable (host:port, tests), else Google's with ADC."""
    endpoint = os.environ.get(endpoint_variable)
    if endpoint:
        import grpc
        return client_type(transport=transport_type(channel=grpc.insecure_channel(endpoint)))
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named and not Path(named).is_file():
        raise FleetError(f"GOOGLE_APPLICATION_CREDENTIALS={named}: no such file; point it at a service account key "
                         "or credentials JSON file, or unset it and run `gcloud auth application-default login`")
    import google.auth
    import google.auth.exceptions
    try:
        credentials, _ = google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise FleetError(f"GOOGLE_APPLICATION_CREDENTIALS={named}: {error}" if named else NO_CREDENTIALS) from error
    return client_type(credentials=credentials)
