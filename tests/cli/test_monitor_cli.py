"""`fleet monitor` against a local fake MetricService: every figure, worst first, errors per endpoint."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.api import distribution_pb2

from fleet.cli import main
from fleet.cloud import Endpoint, stack_endpoints
from fleet.monitor import Summary, bucket_bounds, figure, percentile
from fleet.program import CLOUD_RUN
from tests.fakes.metric_service import (
    FakeMetricService,
    count_series,
    distribution_series,
    gauge_series,
    serve,
)

REQUESTS, LATENCY = "run.googleapis.com/request_count", "run.googleapis.com/request_latencies"
INSTANCES, STARTUP = "run.googleapis.com/container/instance_count", "run.googleapis.com/container/startup_latencies"
DEV_SERVICES = {"demo-iowa", "demo-st-ghislain", "demo-tokyo", "demo-raw-iowa",
                "shared-iowa", "shared-st-ghislain", "shared-changhua-county"}


def exponential(scale: float, growth: float, finite: int) -> distribution_pb2.Distribution.BucketOptions:
    return distribution_pb2.Distribution.BucketOptions(
        exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
            num_finite_buckets=finite, growth_factor=growth, scale=scale))


def test_exponential_bucket_bounds_include_underflow_and_overflow():
    assert bucket_bounds(exponential(100, 2, 3)) == [(0, 100), (100, 200), (200, 400), (400, 800), (800, 800)]


@pytest.mark.parametrize(("q", "expected"), [(0.5, 200.0), (0.95, 700.0), (0.99, 780.0), (0.25, 150.0)])
def test_percentile_interpolates_inside_the_bucket(q, expected):
    # 50 requests in 100-200 ms, 30 in 200-400 ms, 20 in 400-800 ms (hand-computed ranks).
    assert percentile(bucket_bounds(exponential(100, 2, 3)), [0, 50, 30, 20, 0], q) == pytest.approx(expected)


def test_percentile_of_no_samples_is_unknown_and_overflow_reports_its_lower_bound():
    bounds = bucket_bounds(exponential(100, 2, 3))
    assert percentile(bounds, [0, 0, 0, 0, 0], 0.5) is None
    assert percentile(bounds, [0, 0, 0, 0, 4], 0.99) == 800


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_endpoints_are_exactly_the_cloud_run_services_the_program_declares(stack, request):
    # fleet monitor/logs read the layout without evaluating the program: same names, regions and roles
    plan = request.getfixturevalue(f"{stack}_plan")
    declared = [Endpoint(r.name, r.inputs["name"], r.inputs["location"], r.inputs["template"]["labels"]["role"])
                for r in plan.custom(CLOUD_RUN)]
    assert stack_endpoints(argparse.Namespace(stack=stack, catalog=None, endpoint=None)) == declared


def fake_fleet(failing: dict[str, grpc.StatusCode] | None = None) -> FakeMetricService:
    return FakeMetricService({
        # demo-iowa: 320 requests, 20 of them 5xx, latency split over two points, 3 cold starts, 2 instances now.
        ("demo-iowa-dev", REQUESTS): [count_series("2xx", [100, 200]), count_series("5xx", [5, 15])],
        ("demo-iowa-dev", LATENCY): [distribution_series([[0, 30, 20, 10, 0], [0, 20, 10, 10, 0]], mean=300,
                                                     scale=100)],
        # instances: ALIGN_MAX over 2-minute periods (--range 1h): the last period holds the 1 and the 2
        ("demo-iowa-dev", INSTANCES): [gauge_series([3, 1, 2]), gauge_series([4, 4, 5], state="idle")],
        ("demo-iowa-dev", STARTUP): [distribution_series([[0, 1, 1, 0, 0], [0, 0, 1, 0, 0]], mean=2500, scale=1000)],
        # shared-iowa: healthy traffic, fast.
        ("shared-iowa-dev", REQUESTS): [count_series("2xx", [40, 60])],
        ("shared-iowa-dev", LATENCY): [distribution_series([[0, 100, 0, 0, 0]], mean=150, scale=100)],
        ("shared-iowa-dev", INSTANCES): [gauge_series([1, 1])],
        # demo-tokyo scaled to zero: instance series of zeros, no requests at all.
        ("demo-tokyo-dev", INSTANCES): [gauge_series([0, 0])],
        # an empty series: present, no points
        ("demo-raw-iowa-dev", REQUESTS): [count_series("2xx", [])],
    }, failing=failing)


def run_monitor(monkeypatch, capsys, fake: FakeMetricService, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("fleet.cloud.RETRY_SECONDS", 0.5)  # the fake's UNAVAILABLE is not transient
    with serve(fake) as endpoint:
        monkeypatch.setenv("FLEET_MONITORING_ENDPOINT", endpoint)
        code = main(["monitor", "--stack", "dev", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_monitor_json_reports_every_figure_worst_first(monkeypatch, capsys):
    started = time.monotonic()
    code, out, err = run_monitor(monkeypatch, capsys, fake_fleet(failing={
        "demo-st-ghislain-dev": grpc.StatusCode.UNAVAILABLE,  # retried, then reported (Cloud Run service names)
        "shared-st-ghislain-dev": grpc.StatusCode.PERMISSION_DENIED}), "--json")
    assert code == 0
    assert time.monotonic() - started < 15, "UNAVAILABLE retried for RETRY_SECONDS (0.5 s here), not longer"
    rows = json.loads(out)
    assert out == json.dumps(rows, indent=2) + "\n", "one figure a line, indented"
    assert {r["name"] for r in rows} == DEV_SERVICES
    by_name = {r["name"]: r for r in rows}
    assert by_name["demo-iowa"] | {} == {
        "name": "demo-iowa", "region": "us-central1", "role": "dedicated", "totalRequests": 320, "errorCount": 20,
        "errorRate": 0.0625, "avgLatencyMs": 300.0, "p50LatencyMs": 200.0, "p95LatencyMs": 700.0,
        "p99LatencyMs": 780.0, "instanceCount": 2, "coldStarts": 3, "error": None}
    assert by_name["shared-iowa"]["p50LatencyMs"] == 150.0 and by_name["shared-iowa"]["errorRate"] == 0
    assert by_name["shared-iowa"]["role"] == "shared"
    tokyo = by_name["demo-tokyo"]
    assert (tokyo["totalRequests"], tokyo["instanceCount"], tokyo["p95LatencyMs"], tokyo["error"]) == (0, 0, None, None)
    # the endpoints that could not be read come first with their error; the one with 5xx next
    assert (rows[0]["name"], rows[0]["error"]) == ("demo-st-ghislain", "ServiceUnavailable: unavailable for "
                                                                       "demo-st-ghislain-dev")
    assert (rows[1]["name"], rows[1]["error"]) == ("shared-st-ghislain", "PermissionDenied: permission denied for "
                                                                         "shared-st-ghislain-dev")
    assert rows[2]["name"] == "demo-iowa"
    assert "demo-st-ghislain (europe-west1)" in err and "Traceback" not in err


def test_monitor_queries_each_service_with_its_own_filter(monkeypatch, capsys):
    fake = fake_fleet()
    run_monitor(monkeypatch, capsys, fake, "--endpoint", "demo-tokyo", "--range", "24h")
    assert {r.filter.split("service_name=")[1] for r in fake.requests} == {
        '"demo-tokyo-dev" AND resource.labels.location="asia-northeast1"'}, "its Cloud Run service, by name"
    assert all(r.name == "projects/my-gcp-project-dev" for r in fake.requests)
    assert all(r.interval.end_time.timestamp() - r.interval.start_time.timestamp() == 86400 for r in fake.requests)


def test_monitor_table_and_plot(monkeypatch, capsys, tmp_path):
    png = tmp_path / "fleet.png"
    code, out, _ = run_monitor(monkeypatch, capsys, fake_fleet(), "--plot", str(png))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ENDPOINT", "REGION", "REQUESTS"]
    assert lines[1].split()[:5] == ["demo-iowa", "us-central1", "320", "20", "6.25%"]
    assert "no data" in next(line for line in lines if line.startswith("demo-tokyo"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_puts_utc_dates_on_the_time_axis():
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    start = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    times = [(start + timedelta(minutes=10 * i)).timestamp() for i in range(7)]
    busy = Summary("demo-iowa", "us-central1", "dedicated", totalRequests=60,
                   series={"requests": [(t, 10) for t in times], "errors": [(t, 0) for t in times],
                           "latencyP95": [(t, 120.0) for t in times]})
    fig = figure([busy])
    try:
        fig.canvas.draw()
        axis = fig.axes[-1].xaxis
        assert isinstance(axis.get_major_locator(), mdates.AutoDateLocator)
        formatter = axis.get_major_formatter()
        assert isinstance(formatter, mdates.ConciseDateFormatter)
        assert formatter.get_offset() == "2026-Dec-02"  # the day, once; ticks read as times of day
        labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
        assert labels and all(":" in label for label in labels), labels
        assert "09:00" in labels and fig.axes[-1].get_xlabel() == "time (UTC)"
        assert fig.axes[0].lines[0].get_xdata()[0] == start  # the points sit at their UTC time
    finally:
        plt.close(fig)


def test_monitor_exits_nonzero_only_when_nothing_could_be_read(monkeypatch, capsys):
    code, _, err = run_monitor(monkeypatch, capsys, fake_fleet(failing=dict.fromkeys({f"{s}-dev" for s in DEV_SERVICES},
                                                                            grpc.StatusCode.DEADLINE_EXCEEDED)))
    assert code == 1
    assert err.count("DeadlineExceeded: deadline exceeded for") == len(DEV_SERVICES) and "Traceback" not in err
    code, out, _ = run_monitor(monkeypatch, capsys, fake_fleet(failing=dict.fromkeys({f"{s}-dev" for s in DEV_SERVICES},
                                                                                 grpc.StatusCode.DEADLINE_EXCEEDED)))
    row = next(line.split() for line in out.splitlines() if line.startswith("demo-iowa "))
    assert row[2:11] == ["-"] * 9, "nothing read is not zero requests and 0.00% errors"


@pytest.mark.parametrize(("name", "message"), [
    ("no/such/dir/x.png", "--plot no/such/dir/x.png: no such directory no/such/dir"),
    ("x.txt", "--plot x.txt: not an image file name; end it in .png (or "),
])
def test_a_plot_file_it_cannot_write_is_one_line_before_any_query(monkeypatch, capsys, name: str, message: str):
    fake = fake_fleet()
    code, out, err = run_monitor(monkeypatch, capsys, fake, "--plot", name)
    assert code == 2 and out == "" and err.startswith(f"fleet monitor: {message}") and err.count("\n") == 1
    assert fake.requests == [], "the command line is checked before Cloud Monitoring is asked anything"


def test_unknown_endpoint_and_missing_credentials_are_clear_errors(monkeypatch, capsys, tmp_path):
    code, _, err = run_monitor(monkeypatch, capsys, fake_fleet(), "--endpoint", "nope")
    assert code == 2 and "--endpoint nope: no such endpoint or Cloud Run service in stack dev; 7 services, e.g. " \
        "demo-iowa" in err
    monkeypatch.delenv("FLEET_MONITORING_ENDPOINT")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert main(["monitor", "--stack", "dev"]) == 2
    err = capsys.readouterr().err
    assert f"GOOGLE_APPLICATION_CREDENTIALS={tmp_path / 'missing.json'}: no such file" in err
    assert "Traceback" not in err


def test_linear_and_explicit_bucket_bounds():
    linear = distribution_pb2.Distribution.BucketOptions(
        linear_buckets=distribution_pb2.Distribution.BucketOptions.Linear(num_finite_buckets=2, width=50, offset=10))
    explicit = distribution_pb2.Distribution.BucketOptions(
        explicit_buckets=distribution_pb2.Distribution.BucketOptions.Explicit(bounds=[5, 25, 125]))
    assert bucket_bounds(linear) == [(0, 10), (10, 60), (60, 110), (110, 110)]
    assert bucket_bounds(explicit) == [(0, 5), (5, 25), (25, 125), (125, 125)]
    # 10 samples in 5-25 ms: the median sits halfway through that bucket
    assert percentile(bucket_bounds(explicit), [0, 10, 0, 0], 0.5) == pytest.approx(15.0)


def test_progress_counts_endpoints_on_a_terminal_only(monkeypatch, capsys):
    _, _, err = run_monitor(monkeypatch, capsys, fake_fleet())
    assert "endpoints" not in err  # piped stderr stays quiet
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    _, _, err = run_monitor(monkeypatch, capsys, fake_fleet())
    assert err == "".join(f"\r{n}/7 endpoints" for n in range(1, 8)) + "\n", "one line, rewritten in place"


def test_monitor_sums_counts_per_period_within_the_range(monkeypatch, capsys):
    """What `fleet monitor` asks for decides what it shows: counts (ALIGN_DELTA) summed over the --range, the
    largest instance count per period, distributions merged per period, every series of every page; points
    before the range are not counted. The fake answers as Cloud Monitoring does (tests/fakes/metric_service.py)."""
    now = int(time.time())
    ago = {"30m": now - 1800, "3h": now - 3 * 3600, "8h": now - 8 * 3600}
    fake = FakeMetricService({
        ("demo-iowa-dev", REQUESTS): [count_series("2xx", [7], start) for start in ago.values()]
        + [count_series("5xx", [2], ago["30m"]), count_series("4xx", [1], ago["3h"])],
        ("demo-iowa-dev", INSTANCES): [gauge_series([4], start=ago["3h"]), gauge_series([1], start=ago["30m"])],
        ("demo-iowa-dev", STARTUP): [distribution_series([[0, 2, 0, 0, 0]], 2000, start=start)
                                     for start in ago.values()],
    })
    for range_, (requests, errors, cold) in {"1h": (9, 2, 2), "6h": (17, 2, 4), "24h": (24, 2, 6)}.items():
        fake.requests.clear()
        code, out, _ = run_monitor(monkeypatch, capsys, fake, "--endpoint", "demo-iowa", "--range", range_, "--json")
        [row] = json.loads(out)
        assert code == 0 and (row["totalRequests"], row["errorCount"], row["coldStarts"]) == (requests, errors, cold)
        assert row["instanceCount"] == 1, "the latest period's, not the range's largest"
        seconds = {"1h": 3600, "6h": 6 * 3600, "24h": 86400}[range_]
        aligners = {}
        for r in fake.requests:
            assert r.interval.end_time.timestamp() - r.interval.start_time.timestamp() == seconds
            assert abs(r.interval.end_time.timestamp() - now) < 120, "the range ends now"
            period = r.aggregation.alignment_period.total_seconds()
            assert period % 60 == 0 and 24 <= seconds / period <= 30, "whole minutes, 24 to 30 points a range"
            assert r.aggregation.cross_series_reducer == 0 and not r.aggregation.group_by_fields
            aligners[r.filter.split('"')[1]] = r.aggregation.per_series_aligner.name
        assert aligners == {REQUESTS: "ALIGN_DELTA", LATENCY: "ALIGN_DELTA", INSTANCES: "ALIGN_MAX",
                            STARTUP: "ALIGN_DELTA"}
