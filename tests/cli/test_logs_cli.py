"""`fleet logs` against a local fake Logging API, fed with the inference server's own JSON log lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from fleet.cli import main
from fleet.logs import FOLLOW_INTERVAL_SECONDS, log_filter
from inference_service.telemetry import JsonFormatter, Metrics, RequestMiddleware
from tests.fakes.logging_service import FakeLogging, ingest, serve

NOW = datetime.now(UTC)


def server_line(level: int, message: str, fields: dict | None = None) -> str:
    """A line exactly as the inference server writes it to stdout."""
    record = logging.LogRecord("inference_service", level, __file__, 1, message, None, None)
    if fields:
        record.fields = fields
    return JsonFormatter().format(record)


REQUEST_500 = server_line(logging.ERROR, "POST /predict 500 123.4ms", {
    "httpRequest": {"requestMethod": "POST", "requestUrl": "/predict?conf=0.5", "status": 500,
                    "latency": "0.123400s", "userAgent": "curl/8.5"},
    "logging.googleapis.com/trace": "projects/my-gcp-project-dev/traces/abc123"})


def fake_logs(fail: bool = False) -> FakeLogging:
    return FakeLogging([
        ingest(REQUEST_500, "demo-iowa-dev", "us-central1", NOW - timedelta(minutes=5)),
        ingest(server_line(logging.INFO, "model loaded in 812 ms"), "demo-iowa-dev", "us-central1",
               NOW - timedelta(minutes=30)),
        ingest(server_line(logging.WARNING, "slow inference"), "shared-iowa-dev", "us-central1",
               NOW - timedelta(minutes=10)),
        ingest(server_line(logging.INFO, "yesterday"), "demo-tokyo-dev", "asia-northeast1", NOW - timedelta(days=1)),
        ingest(server_line(logging.ERROR, "not in this stack"), "other-service", "us-central1", NOW),
    ], fail=fail)


def run_logs(monkeypatch, capsys, fake: FakeLogging, *args: str) -> tuple[int, str, str]:
    with serve(fake) as endpoint:
        monkeypatch.setenv("FLEET_LOGGING_ENDPOINT", endpoint)
        code = main(["logs", "--stack", "dev", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_server_request_lines_parse_into_request_fields_newest_first(monkeypatch, capsys):
    code, out, _ = run_logs(monkeypatch, capsys, fake_logs(), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in rows] == ["POST /predict 500 123.4ms", "slow inference", "model loaded in 812 ms"]
    first = rows[0]
    assert (first["severity"], first["endpoint"], first["service"], first["region"]) == (
        "ERROR", "demo-iowa", "demo-iowa-dev", "us-central1"), "the endpoint's name, from its Cloud Run service's"
    assert first["httpRequest"] == {"method": "POST", "url": "/predict?conf=0.5", "status": 500,
                                    "latencyMs": 123.4, "userAgent": "curl/8.5"}
    assert first["trace"] == "projects/my-gcp-project-dev/traces/abc123"
    assert rows[2]["httpRequest"] is None
    assert datetime.fromisoformat(first["timestamp"]) > datetime.fromisoformat(rows[1]["timestamp"])


def test_severity_endpoint_and_since_narrow_the_query(monkeypatch, capsys):
    fake = fake_logs()
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--endpoint", "demo-iowa", "--severity", "error",
                            "--since", "2d")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TIMESTAMP", "SEVERITY", "ENDPOINT", "REGION", "REQUEST", "MESSAGE"]
    assert len(lines) == 2 and "POST /predict?conf=0.5 500 123.4ms" in lines[1]
    assert 'service_name=("demo-iowa-dev")' in fake.requests[0].filter, "its Cloud Run service, by name"
    assert fake.requests[0].resource_names == ["projects/my-gcp-project-dev"]


def test_limit_keeps_the_newest_entries(monkeypatch, capsys):
    code, out, _ = run_logs(monkeypatch, capsys, fake_logs(), "--json", "--limit", "2")
    assert code == 0
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["POST /predict 500 123.4ms",
                                                                          "slow inference"]


def test_api_errors_and_bad_input_are_one_clear_message(monkeypatch, capsys):
    code, _, err = run_logs(monkeypatch, capsys, fake_logs(fail=True))
    assert code == 1 and "Cloud Logging answered 403: project my-gcp-project-dev: permission denied" in err
    assert "Traceback" not in err
    code, _, err = run_logs(monkeypatch, capsys, fake_logs(), "--since", "yesterday")
    assert code == 2 and "--since yesterday: expected a number and a unit" in err


def test_no_entries_say_so_once_and_follow_waits_quietly_for_the_first(monkeypatch, capsys):
    """Without --follow an empty window says "no log entries"; while following, polls that find nothing print
    nothing (no header, no repeated notice), every FOLLOW_INTERVAL_SECONDS, until an entry arrives."""
    fake = FakeLogging([])
    code, out, _ = run_logs(monkeypatch, capsys, fake)
    assert (code, out) == (0, "no log entries\n")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            fake.entries.append(ingest(server_line(logging.WARNING, "slow inference"), "demo-iowa-dev", "us-central1",
                                       datetime.now(UTC)))
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("fleet.logs.time.sleep", sleep)
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--follow")
    assert code == 0 and sleeps == [FOLLOW_INTERVAL_SECONDS] * 3
    header, row = out.splitlines()
    assert header.startswith("TIMESTAMP") and row.split()[1:] == ["WARNING", "demo-iowa", "us-central1",
                                                                  "slow", "inference"]


def test_follow_resumes_one_microsecond_after_the_newest_entry(monkeypatch, capsys):
    """The next poll starts just after the newest entry printed: an entry 1 µs newer is the first it shows, the
    newest one is not shown twice."""
    newest = datetime.now(UTC).replace(microsecond=500000) - timedelta(minutes=1)
    fake = FakeLogging([ingest(server_line(logging.INFO, "first"), "demo-iowa-dev", "us-central1", newest)])
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            raise KeyboardInterrupt
        fake.entries.append(ingest(server_line(logging.INFO, "1 µs later"), "demo-iowa-dev", "us-central1",
                                   newest + timedelta(microseconds=1)))

    monkeypatch.setattr("fleet.logs.time.sleep", sleep)
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--follow", "--json")
    assert code == 0 and messages(out) == ["first", "1 µs later"]


def test_the_filter_is_the_logging_query_language(monkeypatch, capsys):
    """What Logs Explorer would be given: upper-case AND/OR (lower case would be search terms), the start in UTC
    with a Z, the severity only when asked for."""
    since = datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC)
    assert log_filter(["demo-iowa-dev", "shared-iowa-dev"], since, "WARNING") == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name=("demo-iowa-dev" OR "shared-iowa-dev") '
        'AND timestamp>="2026-12-03T04:05:06Z" AND severity>=WARNING')
    assert log_filter(["demo-iowa-dev"], since, None) == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name=("demo-iowa-dev") '
        'AND timestamp>="2026-12-03T04:05:06Z"')


def request_line(method: str, url: str, status: int, latency: str | None = None) -> str:
    """A request entry with no message of its own (as Cloud Run's request log writes them): only httpRequest."""
    http = {"requestMethod": method, "requestUrl": url, "status": status, **({"latency": latency} if latency else {})}
    return json.dumps({"severity": "INFO", "httpRequest": http})


def test_entries_without_a_message_or_a_request_are_shown_from_what_they_have(monkeypatch, capsys):
    """A request entry without message reads as its method, URL and status; latency in ms to 0.1 ms, absent when
    not logged; a plain-text line (a traceback on stderr) is its text, the table showing its first line; an entry
    with neither has an empty message; entries without httpRequest or trace have none."""
    minute = datetime.now(UTC) - timedelta(minutes=1)
    fake = FakeLogging([
        ingest(request_line("GET", "/health", 200, "1.5s"), "demo-iowa-dev", "us-central1", minute),
        ingest(request_line("POST", "/predict", 200, "0.0123456s"), "demo-iowa-dev", "us-central1",
               minute - timedelta(seconds=1)),
        ingest(request_line("POST", "/predict", 499), "demo-iowa-dev", "us-central1", minute - timedelta(seconds=2)),
        ingest("Traceback (most recent call last):\n  File \"app.py\", line 1", "demo-iowa-dev", "us-central1",
               minute - timedelta(seconds=3)),
        ingest(json.dumps({"severity": "NOTICE"}), "demo-iowa-dev", "us-central1", minute - timedelta(seconds=4)),
        ingest(server_line(logging.INFO, "a job, not the service"), "demo-iowa-dev", "us-central1", minute,
               resource_type="cloud_run_job"),
    ])
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in rows] == ["GET /health 200", "POST /predict 200", "POST /predict 499",
                                            'Traceback (most recent call last):\n  File "app.py", line 1', ""]
    assert [r["httpRequest"] and r["httpRequest"]["latencyMs"] for r in rows] == [1500.0, 12.3, None, None, None]
    assert [r["severity"] for r in rows[3:]] == ["DEFAULT", "NOTICE"] and {r["trace"] for r in rows} == {None}
    code, out, _ = run_logs(monkeypatch, capsys, fake)
    table = [line.split("us-central1", 1)[1].split() for line in out.splitlines()[1:]]
    assert table == [["GET", "/health", "200", "1500.0ms", "GET", "/health", "200"],
                     ["POST", "/predict", "200", "12.3ms", "POST", "/predict", "200"],
                     ["POST", "/predict", "499", "POST", "/predict", "499"],
                     ["Traceback", "(most", "recent", "call", "last):"],
                     []]


@pytest.mark.parametrize(("argv", "message"), [
    (["--limit", "0"], "argument --limit: 0: expected a positive whole number"),
    (["--limit", "-3"], "argument --limit: -3: expected a positive whole number"),
    (["--limit", "ten"], "argument --limit: ten: expected a positive whole number"),
    (["--severity", "loud"], "argument --severity: invalid choice: 'LOUD'"),
])
def test_a_bad_limit_or_severity_is_refused_before_any_query(monkeypatch, capsys, argv, message):
    fake = fake_logs()
    with pytest.raises(SystemExit) as exit_:
        run_logs(monkeypatch, capsys, fake, *argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err and fake.requests == []


def test_a_limit_of_one_prints_the_newest_entry_from_a_page_of_one(monkeypatch, capsys):
    fake = fake_logs()
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json", "--limit", "1")
    assert code == 0 and messages(out) == ["POST /predict 500 123.4ms"]
    assert [r.page_size for r in fake.requests] == [1]


def test_follow_prints_only_entries_newer_than_the_last_poll(monkeypatch, capsys):
    fake = fake_logs()
    sleeps = []

    def sleep(seconds: float) -> None:  # between polls a new request arrives; Ctrl-C after the second poll
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        fake.entries.append(ingest(server_line(logging.INFO, "GET /health 200 1.0ms"), "demo-iowa-dev", "us-central1",
                                   datetime.now(UTC)))

    monkeypatch.setattr("fleet.logs.time.sleep", sleep)
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--follow", "--json")
    assert code == 0
    messages = [json.loads(line)["message"] for line in out.splitlines()]
    # the first poll's 3 entries, then only the one that arrived since
    assert messages == ["POST /predict 500 123.4ms", "slow inference", "model loaded in 812 ms",
                        "GET /health 200 1.0ms"]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_request_middlewares_own_line_becomes_the_displayed_fields(monkeypatch, capsys):
    """The line the server's request middleware logs for a failed predict, through Cloud Logging, to `fleet logs`."""
    captured = Captured()
    logger = logging.getLogger("inference_service")
    logger.addHandler(captured)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        middleware = RequestMiddleware(app=None, metrics=Metrics(), max_body=1 << 20, project="my-gcp-project-dev")
        scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"conf=0.4",
                 "client": ("203.0.113.9", 5000), "http_version": "1.1"}
        headers = {"user-agent": "python-httpx/0.27", "content-length": "2048",
                   "x-cloud-trace-context": "0123456789abcdef/42;o=1"}
        middleware._record(scope, headers, {"status": 500, "sent": 64, "received": 2048}, 0.25)
    finally:
        logger.removeHandler(captured)
    [line] = captured.lines
    fake = FakeLogging([ingest(line, "demo-iowa-dev", "us-central1", NOW - timedelta(minutes=1))])
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json", "--endpoint", "demo-iowa")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["severity"], row["message"]) == ("ERROR", "POST /predict 500 250.0ms")
    assert row["httpRequest"] == {"method": "POST", "url": "/predict?conf=0.4", "status": 500,
                                  "latencyMs": 250.0, "userAgent": "python-httpx/0.27"}
    assert row["trace"] == "projects/my-gcp-project-dev/traces/0123456789abcdef"


def test_unknown_endpoint_and_missing_credentials_are_clear_errors(monkeypatch, capsys, tmp_path):
    code, _, err = run_logs(monkeypatch, capsys, fake_logs(), "--endpoint", "demo-nowhere")
    assert code == 2 and "--endpoint demo-nowhere: no such endpoint or Cloud Run service in stack dev" in err
    monkeypatch.delenv("FLEET_LOGGING_ENDPOINT")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert main(["logs", "--stack", "dev"]) == 2
    err = capsys.readouterr().err
    assert f"GOOGLE_APPLICATION_CREDENTIALS={tmp_path / 'missing.json'}: no such file" in err
    assert "Traceback" not in err
    assert main(["logs", "--stack", "dev", "--since", "2x"]) == 2, "a typo in the command line comes first"
    assert capsys.readouterr().err == "fleet logs: --since 2x: expected a number and a unit, e.g. 30m, 1h, 2d\n"


def minutes_ago(*minutes: int) -> FakeLogging:
    """One INFO line of demo-iowa per age, its message the age ("m12" is 12 minutes old), from now: a module-level
    time would age the entries by however long the suite ran before this test."""
    now = datetime.now(UTC)
    return FakeLogging([ingest(server_line(logging.INFO, f"m{m}"), "demo-iowa-dev", "us-central1",
                               now - timedelta(minutes=m)) for m in minutes], page_limit=2)


def messages(out: str) -> list[str]:
    return [json.loads(line)["message"] for line in out.splitlines()]


def test_the_newest_entries_first_across_pages_and_within_the_window(monkeypatch, capsys):
    """The API returns oldest first unless asked, a page at a time: `fleet logs` must ask newest first and follow
    the pages, so --limit keeps the newest entries of the --since window, in order."""
    fake = minutes_ago(3, 50, 1, 20, 7, 59, 61, 90, 600)
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json", "--limit", "5")
    assert code == 0 and messages(out) == ["m1", "m3", "m7", "m20", "m50"]
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json", "--since", "1h")
    assert code == 0 and messages(out) == ["m1", "m3", "m7", "m20", "m50", "m59"], "61 min and older: outside"
    code, out, _ = run_logs(monkeypatch, capsys, fake, "--json", "--since", "2h")
    assert code == 0 and messages(out) == ["m1", "m3", "m7", "m20", "m50", "m59", "m61", "m90"]
    assert len(fake.requests) > 3, "more than one page per query"
    assert {r.order_by for r in fake.requests} == {"timestamp desc"}


def test_a_limit_above_the_apis_page_size_is_read_in_pages(monkeypatch, capsys):
    """ListLogEntries refuses a page_size over 1000; --limit 1200 still prints the newest 1200 entries."""
    fake = FakeLogging([ingest(server_line(logging.INFO, f"s{s}"), "demo-iowa-dev", "us-central1",
                               NOW - timedelta(seconds=s)) for s in range(1, 1300)])
    code, out, err = run_logs(monkeypatch, capsys, fake, "--json", "--limit", "1200")
    assert (code, err) == (0, "")
    assert messages(out) == [f"s{s}" for s in range(1, 1201)]
    assert all(0 < r.page_size <= 1000 for r in fake.requests)


def test_an_unreachable_logging_api_is_one_line_and_exit_1(monkeypatch, capsys):
    """Network down, DNS, a wrong endpoint: retried for RETRY_SECONDS, then one line (was a RetryError traceback)."""
    monkeypatch.setattr("fleet.cloud.RETRY_SECONDS", 0.5)
    monkeypatch.setenv("FLEET_LOGGING_ENDPOINT", "127.0.0.1:1")  # nothing listens there
    assert main(["logs", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fleet logs: Cloud Logging did not answer within 0.5 s: ServiceUnavailable: ")
    assert err.count("\n") == 1 and "Traceback" not in err
