"""API keys: a file of sha256 hex digests, one per line, so the secret itself never sits on disk."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import threading
from pathlib import Path

from inference_service.recheck import RECHECK_SECONDS, Recheck

DIGEST = re.compile(r"^[0-9a-f]{64}$")


class AuthError(Exception):
    """Missing or wrong key: answered 401 with a JSON error."""


class KeyFileError(ValueError):
    """A key file line that is not a digest (often the key itself): the server refuses to start on it."""


def hash_key(key: str) -> str:
    """The digest a key file line holds for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_digests(path: Path) -> frozenset[str]:
    """Digests in a key file; blank lines and ``#`` comments are skipped, anything else malformed is an error."""
    digests = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip().lower()
        if not line or line.startswith("#"):
            continue
        if not DIGEST.match(line):
            raise KeyFileError(f"{path}:{n}: not a sha256 hex digest (64 hex characters); the key file holds "
                               "digests of keys, never a key itself: make the line with "
                               "printf %s \"$KEY\" | sha256sum | cut -d' ' -f1")
        digests.add(line)
    return frozenset(digests)


class KeyStore:
    """Checks bearer keys against the key file, re-reading it when it changes (Secret Manager rotation),
    looking at most every ``recheck_seconds`` (recheck.py says why).

    ``path=None`` means anonymous access, which only ``--allow-anonymous`` may ask for.
    """

    def __init__(self, path: str | Path | None, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.path = Path(path) if path else None
        self._recheck = Recheck(recheck_seconds)
        self._lock = threading.Lock()
        self._mtime = 0.0
        self._digests: frozenset[str] = frozenset()
        if self.path is not None:
            self._reload()

    @property
    def anonymous(self) -> bool:
        return self.path is None

    def _reload(self) -> None:
        assert self.path is not None
        mtime = os.stat(self.path).st_mtime
        if mtime != self._mtime:
            with self._lock:
                self._digests, self._mtime = read_digests(self.path), mtime

    def check(self, authorization: str | None) -> None:
        """Raise ``AuthError`` unless the ``Authorization: Bearer <key>`` header holds a listed key."""
        if self.anonymous:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        if self._recheck.due():
            with contextlib.suppress(OSError, ValueError):  # a half-written rotation: keep serving the keys we had
                self._reload()
        digest = hash_key(key.strip())
        if not any(hmac.compare_digest(digest, d) for d in self._digests):
            raise AuthError("invalid API key")
