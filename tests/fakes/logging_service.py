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

SERVICES = re.compile(r"service_name=\(([^)]*)\)")
SEVERITY = re.compile(r"severity>=(\w+)")
SINCE = re.compile(r'timestamp>="([^"]+)"')
ORDERS = ("", "timestamp asc", "timestamp desc")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000


def ingest(line: str, service: str, location: str, timestamp: datetime) -> LogEntry:
    """A container's stdout JSON line as Cloud Logging stores it: the documented special fields lifted out."""
    payload = json.loads(line)
    http = payload.pop("httpRequest", None)
    entry = LogEntry(
        log_name="projects/p/logs/run.googleapis.com%2Fstdout", timestamp=timestamp,
        severity=log_severity_pb2.LogSeverity.Value(payload.pop("severity", "DEFAULT")),
        trace=payload.pop("logging.googleapis.com/trace", ""),
        resource={"type": "cloud_run_revision", "labels": {"service_name": service, "location": location}},
        json_payload=payload)
    if http:
        seconds = float(http["latency"].rstrip("s"))
        entry.http_request = {"request_method": http["requestMethod"], "request_url": http["requestUrl"],
                              "status": http["status"], "user_agent": http.get("userAgent", ""),
                              "latency": {"seconds": int(seconds), "nanos": round(seconds % 1 * 1e9)}}
    return entry


class FakeLogging:
    """Filters stored entries on service names, minimum severity and start time, and answers as ListLogEntries
    does (google.logging.v2.ListLogEntriesRequest): `order_by` "timestamp asc" (the default: oldest first) or
    "timestamp desc"; at most `page_size` entries a page (default 50, more than 1000 is refused) with a
    `next_page_token` while more match. `page_limit` makes the fake's pages smaller still, as the API may."""

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
        services = {s.strip().strip('"') for s in SERVICES.search(request.filter).group(1).split(" OR ")}
        minimum = SEVERITY.search(request.filter)
        since = datetime.fromisoformat(SINCE.search(request.filter).group(1).replace("Z", "+00:00"))
        matches = [e for e in self.entries if e.resource.labels["service_name"] in services
                   and e.timestamp >= since
                   and (not minimum or e.severity >= log_severity_pb2.LogSeverity.Value(minimum.group(1)))]
        matches.sort(key=lambda e: e.timestamp, reverse=request.order_by == "timestamp desc")
        start = int(request.page_token or 0)
        end = start + min(request.page_size or DEFAULT_PAGE_SIZE, self.page_limit)
        return ListLogEntriesResponse(entries=matches[start:end],
                                      next_page_token=str(end) if end < len(matches) else "")


def serve(fake: FakeLogging) -> AbstractContextManager[str]:
    """Run `fake` on a free local port; yields host:port."""
    return serve_unary("google.logging.v2.LoggingServiceV2", "ListLogEntries", fake.list_log_entries,
                       ListLogEntriesRequest, ListLogEntriesResponse)
