"""Admission control: at most ``limit`` predicts decode and infer at once; the others wait for a turn while their
expected wait is within ``max_wait`` seconds, and beyond it are refused at once (503 + Retry-After) rather than
queued until they time out.

Shedding by expected wait rather than by a count of waiters: a burst of clients that the server will serve within
a second or two is queued and served, whatever its size, and a backlog too long to serve in time is refused
however few requests make it up (slow predicts). The expected wait of a new request is the work ahead of it (the
requests that must start before it) times the recent service time (an EWMA of how long a predict holds its turn,
under the contention of the moment) divided by the turns; before any predict has finished, a prior stands in. The
service time misses what else delays a turn (an event loop busy answering a storm of clients, CPUs shared with
other work), so the wait that queued predicts really had, per request ahead of them, counts as well: the larger of
the two rates is used (the measured one relaxes toward the other while nothing queues). A hard bound on waiting
requests (``queue``) keeps memory bounded whatever the estimates say.

Cloud Run sends an instance at most its configured concurrency, so with ``limit`` = that concurrency nothing waits
or is refused there; the rule protects the instance when it is reached some other way (a direct client, a
misconfigured concurrency). The turn is taken after the request body has arrived: a slow upload costs a
connection, not a turn on the CPU.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PRIOR_SERVICE_S = 0.25  # before any predict finishes: a CPU predict of a small YOLO model at 640 px
EWMA_WEIGHT = 0.2  # of the latest service time: the estimate follows a change within about ten predicts


class AtCapacity(Exception):
    """The expected wait is over the limit, or the wait queue is full; says when to retry."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """At most ``limit`` holders of ``slot()`` at once; more wait while their expected wait is at most ``max_wait``
    seconds and fewer than ``queue`` wait. One event loop, no locks; ``clock`` is injectable for tests."""

    def __init__(self, limit: int, queue: int, max_wait: float, registry: CollectorRegistry,
                 prior_service_s: float = PRIOR_SERVICE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or queue < 0 or max_wait < 0 or prior_service_s <= 0:
            raise ValueError("the concurrency limit must be at least 1, the queue and the wait at least 0, the "
                             "prior service time positive")
        self.limit, self.queue, self.max_wait, self.service_s = limit, queue, max_wait, prior_service_s
        self.wait_per_ahead_s = prior_service_s / limit  # measured on predicts that queued
        self._clock = clock
        self._slots = asyncio.Semaphore(limit)
        self._running = self._waiting = 0
        self._last_done = -math.inf  # when a predict last left its turn (``clock`` time)
        self.shed = Counter("predict_shed_total", "Predicts refused with 503 because the server was at capacity",
                            registry=registry)
        self.running = Gauge("predict_running", "Predicts decoding or running inference", registry=registry)
        self.waiting = Gauge("predict_waiting", "Predicts waiting for a turn", registry=registry)
        self.service = Gauge("predict_service_seconds", "Recent time a predict holds its turn (EWMA)",
                             registry=registry)
        self.service.set(prior_service_s)
        self.waited = Histogram("predict_wait_seconds", "Time a predict waited for its turn", registry=registry,
                                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        Gauge("predict_concurrency_limit", "Predicts allowed at once (--max-concurrency)", registry=registry).set(limit)
        Gauge("predict_queue_limit", "Predicts allowed to wait, a hard bound (--max-queue)",
              registry=registry).set(queue)
        Gauge("predict_max_wait_seconds", "Expected wait beyond which a predict is refused (--max-wait-seconds)",
              registry=registry).set(max_wait)
        Gauge("predict_expected_wait_seconds", "Expected wait for a turn of a predict arriving now",
              registry=registry).set_function(self.expected_wait)

    def expected_wait(self) -> float:
        """Seconds a predict arriving now would wait for its turn: the turns that must free up before it (the
        waiting requests, plus one) times the recent service time shared by the ``limit`` turns, or times the wait
        per request ahead that queued predicts had, whichever is more; 0 if a turn is free."""
        return self._ahead() * max(self.service_s / self.limit, self.wait_per_ahead_s)

    def lone_after_quiet(self, quiet_s: float) -> bool:
        """Whether the caller, holding a turn, is the only predict running or waiting, and none left its turn in
        the last ``quiet_s`` seconds: a server that was idle, not one that just answered a predict with other
        clients' requests perhaps still unread behind it."""
        return self._running == 1 and not self._waiting and self._clock() - self._last_done >= quiet_s

    def _ahead(self) -> int:
        return max(0, self._running + self._waiting + 1 - self.limit)

    def refuse_if_full(self) -> None:
        """Raise ``AtCapacity`` (counted as shed) if a predict arriving now would wait too long or find no room."""
        wait = self.expected_wait()
        if wait <= self.max_wait and (wait == 0 or self._waiting < self.queue):
            return
        self.shed.inc()
        retry = max(1, math.ceil(wait))  # by then the work now queued has been served
        raise AtCapacity(
            f"server is at capacity: {self._running} predicts running and {self._waiting} waiting, about "
            f"{wait:.1f} s of work ahead of a new one (allowed: {self.max_wait:g} s, {self.queue} waiting); retry "
            f"in {retry} s", retry)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a turn for the body of the ``async with``; raises ``AtCapacity`` at once if none can be had in
        time. How long it waited and held the turn feed the estimates."""
        self.refuse_if_full()
        ahead, joined = self._ahead(), self._clock()
        self._waiting += 1
        self.waiting.inc()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self.waiting.dec()
        self._running += 1
        self.running.inc()
        started = self._clock()
        self.waited.observe(started - joined)
        if ahead:
            self.wait_per_ahead_s += EWMA_WEIGHT * ((started - joined) / ahead - self.wait_per_ahead_s)
        try:
            yield
        finally:
            self._running -= 1
            self.running.dec()
            self._slots.release()
            self._last_done = self._clock()
            self.observe(self._last_done - started)

    def observe(self, seconds: float) -> None:
        """Fold one predict's time holding its turn into the estimate. With no queue, the measured wait per request
        ahead relaxes toward what the service time says: else a stale high value would refuse every would-be
        waiter, and none would queue to measure it anew."""
        self.service_s += EWMA_WEIGHT * (max(seconds, 0.0) - self.service_s)
        self.service.set(self.service_s)
        if not self._waiting:
            self.wait_per_ahead_s += EWMA_WEIGHT * (self.service_s / self.limit - self.wait_per_ahead_s)
