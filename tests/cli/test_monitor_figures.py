"""`fleet monitor`'s figures one endpoint at a time: what summarize reads from the fake Monitoring API, the table
row and the chart it becomes, and the order endpoints are listed in. Expected values are computed by hand."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import matplotlib.pyplot as plt
import pytest
from google.cloud import monitoring_v3
from matplotlib.figure import Figure

from fleet.cli import main
from fleet.cloud import Endpoint
from fleet.monitor import Summary, bucket_bounds, figure, metric_client, percentile, render, summarize, worst_first
from tests.cli.test_monitor_cli import INSTANCES, LATENCY, REQUESTS, STARTUP, exponential
from tests.fakes.metric_service import FakeMetricService, count_series, distribution_series, gauge_series, serve

IOWA = Endpoint("demo-iowa", "demo-iowa-dev", "us-central1", "dedicated")


def summary_of(monkeypatch: pytest.MonkeyPatch, fake: FakeMetricService, revision: str | None = None) -> Summary:
    """summarize() of demo-iowa over the last hour, against `fake`."""
    with serve(fake) as endpoint:
        monkeypatch.setenv("FLEET_MONITORING_ENDPOINT", endpoint)
        return summarize(metric_client(), "my-gcp-project-dev", IOWA, 3600, revision=revision)


@pytest.fixture
def drawn() -> Iterator[list[Figure]]:
    """Figures a test draws, closed after it."""
    figures: list[Figure] = []
    yield figures
    for fig in figures:
        plt.close(fig)


def test_two_periods_of_traffic_become_totals_percentiles_and_three_charts(monkeypatch, drawn):
    """Requests summed per period (errors 0 where a period has none), latency distributions merged over the hour
    for the percentiles and the mean weighted by each period's count, p95 charted per period."""
    early, late = int(time.time()) - 1800, int(time.time()) - 1200  # 10 minutes apart: two alignment periods
    fake = FakeMetricService({
        # 5xx in two series (a 500 and a 503, say) in the same period
        ("demo-iowa-dev", REQUESTS): [count_series("2xx", [100], early), count_series("5xx", [5], early),
                                      count_series("5xx", [2], early), count_series("2xx", [200], late)],
        # 20 samples in 100-200 ms (mean 100) early, 3 in 400-800 ms (mean 401) late, then ten empty minutes
        # (answered newest first: the empty periods come before the samples)
        ("demo-iowa-dev", LATENCY): [distribution_series([[0, 20, 0, 0, 0]], mean=100, scale=100, start=early),
                                     distribution_series([[0, 0, 0, 3, 0]] + [[0, 0, 0, 0, 0]] * 10, mean=401,
                                                         scale=100, start=late)],
        ("demo-iowa-dev", INSTANCES): [gauge_series([6], state="idle", start=late), gauge_series([2], start=early),
                                       gauge_series([1], start=late), gauge_series([1], start=late)],
        ("demo-iowa-dev", STARTUP): [distribution_series([[0, 2, 1, 0, 0]], mean=900, scale=100, start=late)],
    })
    s = summary_of(monkeypatch, fake)
    assert s.error is None
    assert (s.totalRequests, s.errorCount, s.errorRate) == (307, 7, 7 / 307)
    # (20 * 100 + 3 * 401) / 23 = 139.26; merged buckets [0, 20, 0, 3, 0] (23 samples): p50 at rank 11.5 in
    # 100-200, p95 at 21.85 and p99 at 22.77 in 400-800 (1.85 and 2.77 of its 3 samples in)
    assert (s.avgLatencyMs, s.p50LatencyMs, s.p95LatencyMs, s.p99LatencyMs) == (139.3, 157.5, 646.7, 769.3)
    assert (s.instanceCount, s.coldStarts) == (2, 3), "the last period's active instances, across series"
    fig = figure([s])
    drawn.append(fig)
    requests, errors, p95 = ([list(line.get_ydata()) for line in ax.lines] for ax in fig.axes)
    # each period's p95: 19th of 20 samples in 100-200 ms; 2.85th of 3 in 400-800 ms
    assert (requests, errors, p95) == ([[107, 200]], [[7, 0]], [[195.0, 780.0]])
    # oldest first, at the end of each period (each query aligns its periods to its own "now": no common ticks)
    times = [[t.timestamp() for t in line.get_xdata()] for ax in fig.axes for line in ax.lines]
    assert times[0] == times[1] and all(540 <= late - early <= 720 for early, late in times)


def test_a_distribution_without_buckets_gives_the_mean_and_no_percentiles(monkeypatch):
    """Cloud Monitoring may send a distribution's count and mean without its histogram (bucket_counts empty)."""
    series = distribution_series([[0, 0, 0]], mean=250, scale=100)
    series.points[0].value.distribution_value.count = 8
    del series.points[0].value.distribution_value.bucket_counts[:]
    s = summary_of(monkeypatch, FakeMetricService({("demo-iowa-dev", LATENCY): [series]}))
    assert (s.error, s.avgLatencyMs, s.p50LatencyMs, s.p95LatencyMs, s.p99LatencyMs) == (None, 250.0, None, None,
                                                                                         None)
    assert s.series["latencyP95"] == []


def test_an_error_without_a_message_is_reported_by_its_text():
    """A network error is not a Google API error (no .message): still one endpoint's error, not a crash."""

    class Unreachable:
        def list_time_series(self, **_: object) -> list[object]:
            raise ConnectionRefusedError("connection refused")

    s = summarize(Unreachable(), "my-gcp-project-dev", IOWA, 3600)
    assert s.error == "ConnectionRefusedError: connection refused"


def test_a_revision_is_read_on_its_own(monkeypatch):
    """`fleet rollout` judges one revision: every query names it, and only its series count."""
    revision = "demo-iowa-dev-00002-new"
    fake = FakeMetricService({
        ("demo-iowa-dev", REQUESTS): [count_series("2xx", [1000])],
        (revision, REQUESTS): [count_series("2xx", [30]), count_series("5xx", [10])],
        (revision, LATENCY): [distribution_series([[0, 0, 4, 0, 0]], mean=300, scale=100)],
        (revision, INSTANCES): [gauge_series([1])],
        (revision, STARTUP): [distribution_series([[0, 1, 0, 0, 0]], mean=900, scale=100)],
    })
    s = summary_of(monkeypatch, fake, revision=revision)
    assert (s.totalRequests, s.errorCount, s.p50LatencyMs, s.instanceCount, s.coldStarts) == (40, 10, 300.0, 1, 1)
    assert {r.filter.split('"')[1] for r in fake.requests} == {REQUESTS, LATENCY, INSTANCES, STARTUP}
    assert all(r.filter.endswith(f' AND resource.labels.revision_name="{revision}"') for r in fake.requests)
    assert summary_of(monkeypatch, fake).totalRequests == 1000, "without a revision: the service's"


def test_an_endpoint_without_any_series_has_zeros_and_unknown_latency(monkeypatch):
    s = summary_of(monkeypatch, FakeMetricService({}))
    assert (s.totalRequests, s.errorCount, s.errorRate, s.instanceCount, s.coldStarts, s.error) == (0, 0, 0.0, 0, 0,
                                                                                                   None)
    assert (s.avgLatencyMs, s.p50LatencyMs, s.p95LatencyMs, s.p99LatencyMs) == (None, None, None, None)


class Blip(FakeMetricService):
    """Answers the first query UNAVAILABLE, as Cloud Monitoring does now and then, and the rest as the fake does."""

    def __init__(self, data: dict[tuple[str, str], list[monitoring_v3.TimeSeries]]) -> None:
        super().__init__(data)
        self.blipped = False

    def list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext):
        if not self.blipped:
            self.blipped = True
            self.requests.append(request)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the service is currently unavailable")
        return super().list_time_series(request, context)


def test_a_transient_error_is_retried_not_reported(monkeypatch):
    fake = Blip({("demo-iowa-dev", REQUESTS): [count_series("2xx", [7])]})
    s = summary_of(monkeypatch, fake)
    assert (s.error, s.totalRequests) == (None, 7)
    assert [r.filter.split('"')[1] for r in fake.requests[:2]] == [REQUESTS, REQUESTS], "the same query, again"


class Stalled(FakeMetricService):
    """Answers after `seconds`, as a Monitoring API that has stalled."""

    def __init__(self, seconds: float) -> None:
        super().__init__({})
        self.seconds = seconds

    def list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext):
        time.sleep(self.seconds)
        return super().list_time_series(request, context)


def test_a_stalled_query_is_cut_at_the_query_timeout_and_reported(monkeypatch):
    monkeypatch.setattr("fleet.cloud.QUERY_TIMEOUT_SECONDS", 0.3)
    s = summary_of(monkeypatch, Stalled(3.0))
    assert s.error is not None and s.error.startswith("DeadlineExceeded: ")


def test_a_failed_query_is_the_endpoints_error_and_no_figures(monkeypatch):
    s = summary_of(monkeypatch, FakeMetricService({}, failing={"demo-iowa-dev": grpc.StatusCode.PERMISSION_DENIED}))
    assert s.error == "PermissionDenied: permission denied for demo-iowa-dev"
    assert (s.totalRequests, s.p50LatencyMs, s.instanceCount) == (0, None, 0)


def test_percentiles_at_a_gap_and_in_the_underflow_bucket():
    bounds = bucket_bounds(exponential(100, 2, 3))  # 0-100 (underflow), 100-200, 200-400, 400-800, 800+
    # half the samples in 100-200, half in 400-800: the median is where the first half ends, not past the gap
    assert percentile(bounds, [0, 5, 0, 5, 0], 0.5) == 200
    # 10 samples under 100 ms: the underflow bucket starts at 0
    assert percentile(bounds, [10, 0, 0, 0, 0], 0.5) == 50


def test_the_table_shows_every_figure_and_a_note_for_errors_and_silence():
    rows = [Summary("demo-iowa", "us-central1", "dedicated", totalRequests=320, errorCount=20, errorRate=0.0625,
                    avgLatencyMs=300.0, p50LatencyMs=200.0, p95LatencyMs=700.25, p99LatencyMs=780.0, instanceCount=2,
                    coldStarts=3),
            Summary("demo-tokyo", "asia-northeast1", "dedicated", instanceCount=1),  # kept warm, no traffic
            Summary("demo-raw-iowa", "us-central1", "dedicated"),
            Summary("shared-iowa", "us-central1", "shared", error="PermissionDenied: denied")]
    lines = render(rows).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["ENDPOINT", "REGION", "REQUESTS", "ERRORS", "ERR%", "AVG ms", "P50 ms",
                                            "P95 ms", "P99 ms", "INSTANCES", "COLD STARTS", "NOTE"]
    assert [line.split() for line in lines[1:]] == [
        ["demo-iowa", "us-central1", "320", "20", "6.25%", "300.0", "200.0", "700.2", "780.0", "2", "3"],
        ["demo-tokyo", "asia-northeast1", "0", "0", "0.00%", "-", "-", "-", "-", "1", "0"],
        ["demo-raw-iowa", "us-central1", "0", "0", "0.00%", "-", "-", "-", "-", "0", "0", "no", "data"],
        ["shared-iowa", "us-central1", *["-"] * 9, "PermissionDenied:", "denied"]], "unread is not zero"


def test_worst_first_errors_then_error_rate_then_p95_then_name():
    def s(name: str, rate: float = 0.0, p95: float | None = None, error: str | None = None) -> Summary:
        return Summary(name, "us-central1", "dedicated", errorRate=rate, p95LatencyMs=p95, error=error)

    summaries = [s("a-quiet"), s("b-slow", p95=900.0), s("c-failing", rate=0.5), s("d-down", error="x"),
                 s("e-fast", p95=100.0), s("f-failing-slow", rate=0.5, p95=200.0), s("a-also-down", error="y"),
                 s("g-some", rate=0.1, p95=5000.0), s("h-sub-ms", p95=0.5)]
    assert [x.name for x in worst_first(summaries)] == ["a-also-down", "d-down", "f-failing-slow", "c-failing",
                                                         "g-some", "b-slow", "e-fast", "h-sub-ms", "a-quiet"]


def test_the_chart_draws_the_twelve_busiest_with_a_legend_on_shared_time(drawn):
    now = time.time()
    busy = [Summary(f"e{n:02d}", "us-central1", "dedicated", totalRequests=n,
                    series={"requests": [(now - 60, n), (now, n)]}) for n in range(1, 15)]
    fig = figure(busy)
    drawn.append(fig)
    requests, errors, latency = fig.axes
    assert [line.get_label() for line in requests.lines] == [f"e{n:02d}" for n in range(14, 2, -1)]
    assert not errors.lines and not latency.lines, "no series: no line"
    assert [t.get_text() for t in requests.get_legend().get_texts()] == [f"e{n:02d}" for n in range(14, 2, -1)]
    assert [ax.get_title() for ax in fig.axes] == ["requests", "5xx errors", "p95 latency (ms)"]
    assert requests.get_shared_x_axes().joined(requests, latency), "one time axis for the three charts"
    empty = figure([Summary("idle", "us-central1", "dedicated")])
    drawn.append(empty)
    assert not any(ax.lines for ax in empty.axes) and empty.axes[0].get_legend() is None


def test_an_unknown_range_is_refused_with_the_ranges_there_are(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", "--stack", "dev", "--range", "2h"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --range: invalid choice: '2h' (choose from '1h', '6h', '24h', " \
        "'7d', '30d')" in err
