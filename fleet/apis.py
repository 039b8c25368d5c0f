"""`fleet apis`: the Google APIs a stack's plan uses, and the `gcloud services enable` line for a new project.

Derived from the plan itself (every resource type the program declares and every data source it calls),
so a new kind of resource changes the list; a type missing from the table below fails the tests.
A fresh project has few APIs on, and `pulumi up` stops at the first resource whose API is off.
"""

from __future__ import annotations

import argparse
import sys

from fleet.cloud import project
from fleet.program import Plan, evaluate

# Type token (or its module, `gcp:compute`) -> the APIs its create/read calls go to; the longest match wins.
APIS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "gcp:cloudrunv2": ("run.googleapis.com",),
    "gcp:compute": ("compute.googleapis.com",),
    "gcp:secretmanager": ("secretmanager.googleapis.com",),
    "gcp:artifactregistry": ("artifactregistry.googleapis.com",),
    "docker-build:index:Image": ("artifactregistry.googleapis.com",),  # pushes to the stack's repositories
    "gcp:serviceaccount": ("iam.googleapis.com",),
    # project IAM bindings are read and set through Resource Manager's getIamPolicy/setIamPolicy
    "gcp:projects": ("cloudresourcemanager.googleapis.com", "iam.googleapis.com"),
    "gcp:monitoring": ("monitoring.googleapis.com",),
    "gcp:storage": ("storage.googleapis.com",),
    "gcp:organizations/getProject": ("cloudresourcemanager.googleapis.com",),  # the project number
    "gcp:organizations/getClientConfig": (),  # the provider's own credentials: no API call
}


def apis_for(token: str) -> tuple[str, ...] | None:
    """The APIs a resource type or data source uses; None when the table does not know it."""
    keys = [k for k in APIS_BY_TYPE if token == k or token.startswith((f"{k}/", f"{k}:"))]
    return APIS_BY_TYPE[max(keys, key=len)] if keys else None


def required_apis(plan: Plan) -> tuple[list[str], list[str]]:
    """(sorted APIs the plan needs, sorted type tokens the table does not know)."""
    tokens = {r.type for r in plan.custom()} | set(plan.invokes)
    apis: set[str] = set()
    unknown = []
    for token in sorted(tokens):
        found = apis_for(token)
        if found is None:
            unknown.append(token)
        else:
            apis.update(found)
    return sorted(apis), unknown


def enable_command(apis: list[str], project: str) -> str:
    return f"gcloud services enable {' '.join(apis)} --project {project}"


def unknown_warning(unknown: list[str]) -> str:
    return (f"no Google API known for {', '.join(unknown)}: the list may be incomplete; add the type to "
            "APIS_BY_TYPE in fleet/apis.py")


def cmd_apis(args: argparse.Namespace) -> int:
    gcp_project = project(args)  # the command line first, before the plan
    apis, unknown = required_apis(evaluate(args.stack, catalog=args.catalog))
    print(enable_command(apis, gcp_project))
    if unknown:
        print(f"fleet apis: {unknown_warning(unknown)}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("apis", parents=[common], help="the `gcloud services enable` line for the APIs the stack uses")
    p.add_argument("--project", help="the project to enable them in (default: the stack's gcp:project)")
    p.set_defaults(func=cmd_apis)
