"""How often the server looks at its mounted secret files (API key digests, tenants) for a new version.

Cloud Run fetches a mounted Secret Manager volume from the API whenever it is read
(https://cloud.google.com/run/docs/configuring/services/secrets): a check on every request would be a
billed Secret Manager access per request and could exhaust the project's access quota under load. A check
at most every ``RECHECK_SECONDS`` bounds that by time (per instance), and a rotation still lands within it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

RECHECK_SECONDS = 30.0


class Recheck:
    """``due()`` is true at most once per ``interval`` seconds (always true with an interval of 0)."""

    def __init__(self, interval: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        if interval < 0:
            raise ValueError("the secret files' re-check interval must be >= 0 seconds")
        self._interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._next = clock() + interval  # the file was just read at start

    def due(self) -> bool:
        now = self._clock()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self._interval
            return True
