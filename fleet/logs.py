"""`fleet logs`: the endpoints' request and application logs from Cloud Logging, newest first.

The server logs one JSON object per line; Cloud Logging lifts `severity`, `httpRequest` and the trace out of
it, so each entry here has a method, URL, status and latency. `FLEET_LOGGING_ENDPOINT=host:port` sends the
query to an insecure gRPC server instead of Google's (tests).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from components.errors import FleetError
from fleet import cloud
from fleet.cloud import call_limits, google_client, project, stack_endpoints
from fleet.render import table

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
SINCE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEFAULT_LIMIT = 200
MAX_PAGE_SIZE = 1000  # ListLogEntries refuses a larger page_size; the pager asks for the next pages
FOLLOW_INTERVAL_SECONDS = 5.0


def parse_since(text: str) -> timedelta:
    match = SINCE.match(text)
    if not match:
        raise FleetError(f"--since {text}: expected a number and a unit, e.g. 30m, 1h, 2d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a positive whole number")
    return int(text)


def logging_client() -> Any:
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.logging_v2.services.logging_service_v2.transports import LoggingServiceV2GrpcTransport

    return google_client(LoggingServiceV2Client, LoggingServiceV2GrpcTransport, "FLEET_LOGGING_ENDPOINT")


def log_filter(services: list[str], since: datetime, severity: str | None) -> str:
    names = " OR ".join(f'"{name}"' for name in services)
    parts = ['resource.type="cloud_run_revision"', f"resource.labels.service_name=({names})",
             f'timestamp>="{since.isoformat().replace("+00:00", "Z")}"']
    if severity:
        parts.append(f"severity>={severity}")
    return " AND ".join(parts)


def entry_row(entry: Any, endpoints: Mapping[str, str]) -> dict[str, Any]:
    """A LogEntry as users read it: when, how bad, what, which request, which endpoint (`endpoints` maps the
    Cloud Run service names the entries carry to endpoint names)."""
    from google.logging.type import log_severity_pb2

    http = entry.http_request
    service = entry.resource.labels.get("service_name")
    payload = dict(entry.json_payload) if entry.json_payload else {}
    message = payload.get("message") or entry.text_payload or ""
    request = None
    if http.request_method:
        request = {"method": http.request_method, "url": http.request_url, "status": http.status,
                   "latencyMs": round((http.latency.seconds + http.latency.nanos / 1e9) * 1000, 1)
                   if http.HasField("latency") else None,
                   "userAgent": http.user_agent}
        message = message or f"{http.request_method} {http.request_url} {http.status}"
    return {"timestamp": entry.timestamp.isoformat(), "severity": log_severity_pb2.LogSeverity.Name(entry.severity),
            "message": message,
            "httpRequest": request, "endpoint": endpoints.get(service, service), "service": service,
            "region": entry.resource.labels.get("location"), "trace": entry.trace or None}


def fetch(client: Any, project: str, filter_: str, limit: int, endpoints: Mapping[str, str]) -> list[dict[str, Any]]:
    """The newest `limit` entries matching `filter_`, newest first."""
    from google.cloud.logging_v2.types import ListLogEntriesRequest

    request = ListLogEntriesRequest(resource_names=[f"projects/{project}"], filter=filter_,
                                    order_by="timestamp desc", page_size=min(limit, MAX_PAGE_SIZE))
    rows = []
    for entry in client.list_log_entries(request=request, **call_limits()):
        rows.append(entry_row(entry, endpoints))
        if len(rows) >= limit:
            break
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    def request(r: dict[str, Any]) -> str:  # a request logged without its latency shows none, not "Nonems"
        h = r["httpRequest"]
        if not h:
            return ""
        return f'{h["method"]} {h["url"]} {h["status"]}' + ("" if h["latencyMs"] is None else f' {h["latencyMs"]}ms')
    return table(["TIMESTAMP", "SEVERITY", "ENDPOINT", "REGION", "REQUEST", "MESSAGE"],
                 [[r["timestamp"], r["severity"], r["endpoint"], r["region"], request(r),
                   r["message"].splitlines()[0] if r["message"] else ""] for r in rows])


def cmd_logs(args: argparse.Namespace) -> int:
    since = datetime.now(UTC) - parse_since(args.since)  # the command line first: a typo is not a login problem
    gcp_project, client = project(args), logging_client()  # then credentials, before reading the stack
    endpoints = {e.service: e.name for e in stack_endpoints(args)}
    from google.api_core import exceptions

    while True:
        try:
            rows = fetch(client, gcp_project, log_filter(list(endpoints), since, args.severity), args.limit, endpoints)
        except exceptions.GoogleAPICallError as error:
            print(f"fleet logs: Cloud Logging answered {error.code}: {error.message}", file=sys.stderr)
            return 1
        except exceptions.RetryError as error:  # unreachable (network, DNS, endpoint): retried, then given up
            cause = error.cause or error
            print(f"fleet logs: Cloud Logging did not answer within {cloud.RETRY_SECONDS:g} s: {type(cause).__name__}: "
                  f"{getattr(cause, 'message', None) or cause}", file=sys.stderr)
            return 1
        if args.json:
            for row in rows:  # JSON lines: one entry per line, so --follow output streams into jq
                print(json.dumps(row))
        elif rows or not args.follow:
            print(render(rows) if rows else "no log entries")
        if not args.follow:
            return 0
        if rows:
            since = datetime.fromisoformat(rows[0]["timestamp"]) + timedelta(microseconds=1)
        try:
            time.sleep(FOLLOW_INTERVAL_SECONDS)
        except KeyboardInterrupt:  # Ctrl-C is how users stop following
            return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="request and application logs per endpoint (Cloud Logging)")
    p.add_argument("--endpoint", help="one endpoint, e.g. demo-iowa (or its Cloud Run service, demo-iowa-prod)")
    p.add_argument("--since", default="1h", help="how far back: 30m, 1h, 2d (default 1h)")
    p.add_argument("--severity", choices=SEVERITIES, type=str.upper, help="this severity and worse")
    p.add_argument("--follow", action="store_true", help="keep polling for new entries")
    p.add_argument("--project", help="GCP project (default: the stack's gcp:project)")
    p.add_argument("--limit", type=positive, default=DEFAULT_LIMIT, help="at most N entries per poll (default 200)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_logs)
