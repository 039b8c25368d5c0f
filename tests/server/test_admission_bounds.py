"""Admission's bounds at their edges: exactly `limit` predicts run, exactly `queue` wait, the next is refused; a
queue of 0 still serves free turns; a bad setting is refused at start; the capacity gauges an operator reads on
/metrics carry the configured values under their documented names."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from inference_service.admission import Admission, AtCapacity
from tests.server.test_admission import Clock, Holders, sample


@pytest.mark.parametrize(("limit", "queue"), [(1, 0), (1, 3), (3, 0), (3, 2)])
def test_exactly_limit_run_exactly_queue_wait_and_the_next_is_refused(limit: int, queue: int) -> None:
    async def scenario() -> None:
        registry, clock = CollectorRegistry(), Clock()
        holders = Holders(Admission(limit, queue, 1000.0, registry, clock=clock), clock)
        for _ in range(limit + queue):
            await holders.arrive()
        assert (sample(registry, "predict_running"), sample(registry, "predict_waiting")) == (limit, queue)
        with pytest.raises(AtCapacity, match=f"{limit} predicts running and {queue} waiting"):
            await holders.arrive()
        assert sample(registry, "predict_shed_total") == 1
        await holders.finish_oldest()  # a turn frees up: the first waiter takes it, one more may wait
        await holders.arrive()
        assert (sample(registry, "predict_running"), sample(registry, "predict_waiting")) == (limit, queue)
        await holders.finish_all(0.1)
        assert (sample(registry, "predict_running"), sample(registry, "predict_waiting")) == (0, 0)

    asyncio.run(scenario())


def test_the_capacity_settings_are_on_metrics_under_their_names() -> None:
    registry = CollectorRegistry()
    admission = Admission(3, 7, 2.5, registry, prior_service_s=0.6)
    assert sample(registry, "predict_concurrency_limit") == 3
    assert sample(registry, "predict_queue_limit") == 7
    assert sample(registry, "predict_max_wait_seconds") == 2.5
    assert sample(registry, "predict_service_seconds") == 0.6
    assert sample(registry, "predict_expected_wait_seconds") == admission.expected_wait() == 0.0
    assert sample(registry, "predict_wait_seconds_count") == 0


@pytest.mark.parametrize(("limit", "queue", "max_wait", "prior"), [
    (0, 1, 1.0, 0.25), (1, -1, 1.0, 0.25), (1, 1, -0.1, 0.25), (1, 1, 1.0, 0.0), (1, 1, 1.0, -1.0)])
def test_each_bad_setting_alone_is_refused(limit: int, queue: int, max_wait: float, prior: float) -> None:
    with pytest.raises(ValueError, match="the concurrency limit must be at least 1, the queue and the wait at least "
                                         "0, the prior service time positive"):
        Admission(limit, queue, max_wait, CollectorRegistry(), prior_service_s=prior)


def test_the_smallest_settings_are_accepted() -> None:
    admission = Admission(1, 0, 0.0, CollectorRegistry(), prior_service_s=0.001)
    assert (admission.limit, admission.queue, admission.max_wait) == (1, 0, 0.0)


def test_waits_are_counted_in_the_buckets_the_load_benchmark_reads() -> None:
    """benchmarks/load.py reads predict_wait_seconds_bucket{le="0.5"} and {le="1.0"}: both must exist."""
    registry = CollectorRegistry()

    async def scenario() -> None:
        clock = Clock()
        holders = Holders(Admission(1, 5, 100.0, registry, clock=clock), clock)
        await holders.arrive()  # runs at once: waited 0
        await holders.arrive()  # waits 0.75 s for its turn
        await holders.finish_oldest(lag=0.75)
        await holders.finish_all(0.1)

    asyncio.run(scenario())
    samples = {(s.name, s.labels.get("le")): s.value for m in registry.collect() for s in m.samples}
    assert samples[("predict_wait_seconds_bucket", "0.5")] == 1
    assert samples[("predict_wait_seconds_bucket", "1.0")] == 2
