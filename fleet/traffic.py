"""A Cloud Run service's planned revision and traffic split, in words: `fleet plan` and `fleet diff` show both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def revision(inputs: Mapping[str, Any]) -> str:
    """The revision the service's template creates ('-' where Cloud Run names it: shared services)."""
    return str((inputs.get("template") or {}).get("revision") or "-")


def split(inputs: Mapping[str, Any]) -> str:
    """'100% demo-iowa-prod-1a2b...' or '90% <old> / 10% <new> (canary)': who serves what share of requests."""
    targets = inputs.get("traffics") or []
    if not targets:
        return "100% latest"
    return " / ".join(f"{float(t['percent']):g}% {t.get('revision') or 'latest'}"
                      + (f" ({t['tag']})" if t.get("tag") else "") for t in targets)


def previous(inputs: Mapping[str, Any]) -> tuple[str, float] | None:
    """In a rollout wave, the old revision kept beside the template's and its share; None otherwise."""
    others = [t for t in inputs.get("traffics") or [] if t.get("revision") and t["revision"] != revision(inputs)]
    return (str(others[0]["revision"]), float(others[0]["percent"])) if others else None
