"""Admission control: a bounded number of predicts decode and infer at once, a bounded number wait for a turn,
and the rest are refused at once (503 + Retry-After) instead of queueing until they time out.

Cloud Run sends an instance at most its configured concurrency, so with ``limit`` = that concurrency nothing is
refused there; the bound protects the instance when it is reached some other way (a direct client, a
misconfigured concurrency) and keeps the answer to an overload fast and explicit. The slot is taken after
the request body has arrived: a slow upload costs a connection, not a turn on the CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge

RETRY_AFTER_S = 1  # a turn frees up within one inference; one second is a polite, short back-off


class AtCapacity(Exception):
    """Every slot is taken and the wait queue is full."""


class Admission:
    """At most ``limit`` holders of ``slot()`` at once, at most ``queue`` waiting; one event loop, no locks."""

    def __init__(self, limit: int, queue: int, registry: CollectorRegistry) -> None:
        if limit < 1 or queue < 0:
            raise ValueError("the concurrency limit must be at least 1 and the queue at least 0")
        self.limit, self.queue = limit, queue
        self._slots = asyncio.Semaphore(limit)
        self._waiting = 0
        self.shed = Counter("predict_shed_total", "Predicts refused with 503 because the server was at capacity",
                            registry=registry)
        self.running = Gauge("predict_running", "Predicts decoding or running inference", registry=registry)
        self.waiting = Gauge("predict_waiting", "Predicts waiting for a turn", registry=registry)
        Gauge("predict_concurrency_limit", "Predicts allowed at once (--max-concurrency)", registry=registry).set(limit)
        Gauge("predict_queue_limit", "Predicts allowed to wait (--max-queue)", registry=registry).set(queue)

    def message(self) -> str:
        return (f"server is at capacity ({self.limit} predictions running, {self.queue} waiting); retry in "
                f"{RETRY_AFTER_S} s")

    def refuse_if_full(self) -> None:
        """Raise ``AtCapacity`` (counted as shed) if every slot is taken and the queue is full."""
        if self._slots.locked() and self._waiting >= self.queue:
            self.shed.inc()
            raise AtCapacity

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a turn for the body of the ``async with``; raises ``AtCapacity`` at once if none can be had."""
        self.refuse_if_full()
        self._waiting += 1
        self.waiting.inc()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self.waiting.dec()
        self.running.inc()
        try:
            yield
        finally:
            self.running.dec()
            self._slots.release()
