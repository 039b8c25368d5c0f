"""Where a lone request's CPU work runs: on one CPU, so that onnxruntime's pool threads have the others.

The thread that calls onnxruntime is one of the session's intra-op threads. Left to the scheduler, it and the
pool threads (and the event loop's wake-ups) were placed differently from one server process to the next, and
a lone predict took about 0.7 ms longer at the median on 2 vCPUs than with the caller pinned to one CPU and the
pool threads left free (interleaved A/B of server processes: benchmarks/RESULTS.md, server section). Only a
lone request is pinned, and only for its CPU work: under load every thread may run anywhere, since pinning would
queue requests behind each other on one CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def on_one_cpu(pin: bool) -> Iterator[int | None]:
    """With ``pin``, run the block on the lowest CPU the calling thread may use, then give it back every CPU it
    had; the block gets the next CPU, a spare one for its helpers, or None when nothing was pinned. Nothing
    changes with one CPU, or where threads cannot be pinned (not Linux, a sandbox refusing it)."""
    try:
        cpus = os.sched_getaffinity(0) if pin else set()
        if len(cpus) > 1:
            os.sched_setaffinity(0, {min(cpus)})
    except (AttributeError, OSError):  # no sched_*affinity here, or not allowed: run where the scheduler says
        cpus = set()
    try:
        yield sorted(cpus)[1] if len(cpus) > 1 else None
    finally:
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus)
