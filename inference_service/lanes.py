"""Who runs onnxruntime now, and with how many threads: every thread for a lone request, one each under load.

One inference with every CPU's thread answers a lone request fastest. Under steady concurrent load it loses:
decoding the next request preempts one of its threads, and the others spin at the next operator until that one
catches up (on 2 vCPUs at concurrency 4: 84 ms of CPU per bus.jpg predict against 60 ms for raw onnxruntime).
Inferences of one thread each have nobody to wait for. So in adaptive mode the gate holds one token per thread:
a request alone in the server takes them all and runs the full session; when requests overlap, each takes one
token and runs a one-thread session, up to one per thread at once. With a fixed number of workers every
inference takes one token and runs the one session, whose threads the workers split between them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InferenceGate:
    """``tokens`` inference slots; ``adaptive``: a lone request may take them all (see the module docstring)."""

    def __init__(self, tokens: int, adaptive: bool) -> None:
        self.tokens = tokens
        self.adaptive = adaptive and tokens > 1
        self._free = tokens
        self._changed = threading.Condition()

    @contextmanager
    def turn(self, alone: bool) -> Iterator[bool]:
        """Wait for a turn; yields True when the caller should run the one-thread session (a lane), False for the
        full one. ``alone``: no other request is decoding or inferring. Single tokens are never held back for a
        lone request, so an overlap can only delay the full session, never starve anyone."""
        with self._changed:
            full = self.adaptive and alone and self._free == self.tokens
            need = self.tokens if full else 1
            self._changed.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield self.adaptive and not full
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()
