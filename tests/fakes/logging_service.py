"""A fake `google.logging.v2.LoggingServiceV2` answering ListLogEntries from entries built like Cloud Logging's."""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from datetime import datetime

import grpc
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse, LogEntry
from google.logging.type import log_severity_pb2

from tests.fakes import serve_unary

# The clauses `fleet logs` may send, joined by " AND " (the Logging query language's operators are upper case: a
# lower-case "and" is a search term); anything else is refused, so a query that drifts fails loudly.
CLAUSES = {"resource.type": re.compile(r'^resource\.type="([a-z_]+)"$'),
           "services": re.compile(r'^resource\.labels\.service_name=\(("[^"]+"(?: OR "[^"]+")*)\)$'),
           "since": re.compile(r'^timestamp>="([^"]+)"$'),
           "severity": re.compile(r"^severity>=([A-Z]+)$")}
ORDERS = ("", "timestamp asc", "timestamp desc")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000


def ingest(line: str, service: str, location: str, timestamp: datetime,
           resource_type: str = "cloud_run_revision") -> LogEntry:
    """A container's stdout line as Cloud Logging stores it: a JSON object becomes jsonPayload with the documented
    special fields lifted out (an `httpRequest` without `latency` has none), any other line textPayload."""
    try:
        payload = json.loads(line)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return LogEntry(log_name="projects/p/logs/run.googleapis.com%2Fstdout", timestamp=timestamp, text_payload=line,
                        resource={"type": resource_type, "labels": {"service_name": service, "location": location}})
    http = payload.pop("httpRequest", None)
    entry = LogEntry(
        log_name="projects/p/logs/run.googleapis.com%2Fstdout", timestamp=timestamp,
        severity=log_severity_pb2.LogSeverity.Value(payload.pop("severity", "DEFAULT")),
        trace=payload.pop("logging.googleapis.com/trace", ""),
        resource={"type": resource_type, "labels": {"service_name": service, "location": location}},
        json_payload=payload)
    if http:
        seconds = float(http["latency"].rstrip("s")) if "latency" in http else None
        entry.http_request = {"request_method": http["requestMethod"], "request_url": http["requestUrl"],
                              "status": http["status"], "user_agent": http.get("userAgent", ""),
                              **({} if seconds is None else {"latency": {"seconds": int(seconds),
                                                                         "nanos": round(seconds % 1 * 1e9)}})}
    return entry


def parse_filter(filter_: str) -> dict[str, str]:
    """The filter's clauses by kind; ValueError for a clause `fleet logs` does not send or a kind sent twice."""
    found: dict[str, str] = {}
    for clause in filter_.split(" AND "):
        kind = next((k for k, pattern in CLAUSES.items() if pattern.match(clause)), None)
        if kind is None or kind in found:
            raise ValueError(f"filter clause not understood: {clause!r}")
        found[kind] = CLAUSES[kind].match(clause).group(1)  # type: ignore[union-attr]
    return found


class FakeLogging:
    """Filters stored entries on resource type, service names, minimum severity and start time (a filter clause of
    another form is refused), and answers as ListLogEntries does (google.logging.v2.ListLogEntriesRequest):
    `order_by` "timestamp asc" (the default: oldest first) or "timestamp desc"; at most `page_size` entries a page
    (default 50, more than 1000 is refused) with a `next_page_token` while more match. `page_limit` makes the
    fake's pages smaller still, as the API may."""

    def __init__(self, entries: list[LogEntry], fail: bool = False, page_limit: int = MAX_PAGE_SIZE) -> None:
        self.entries, self.fail, self.page_limit, self.requests = entries, fail, page_limit, []

    def list_log_entries(self, request: ListLogEntriesRequest, context: grpc.ServicerContext):
        self.requests.append(request)
        if self.fail:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "project my-gcp-project-dev: permission denied")
        if request.order_by not in ORDERS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"order_by {request.order_by!r} is not one of {ORDERS}")
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size {request.page_size} exceeds 1000")
        try:
            clauses = parse_filter(request.filter)
            minimum = log_severity_pb2.LogSeverity.Value(clauses.get("severity", "DEFAULT"))
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        services = {s.strip('"') for s in clauses["services"].split(" OR ")}
        since = datetime.fromisoformat(clauses["since"].replace("Z", "+00:00"))
        matches = [e for e in self.entries if e.resource.type == clauses["resource.type"]
                   and e.resource.labels["service_name"] in services and e.timestamp >= since
                   and e.severity >= minimum]
        matches.sort(key=lambda e: e.timestamp, reverse=request.order_by == "timestamp desc")
        start = int(request.page_token or 0)
        end = start + min(request.page_size or DEFAULT_PAGE_SIZE, self.page_limit)
        return ListLogEntriesResponse(entries=matches[start:end],
                                      next_page_token=str(end) if end < len(matches) else "")


def serve(fake: FakeLogging) -> AbstractContextManager[str]:
    """Run `fake` on a free local port; yields host:port."""
    return serve_unary("google.logging.v2.LoggingServiceV2", "ListLogEntries", fake.list_log_entries,
                       ListLogEntriesRequest, ListLogEntriesResponse)
