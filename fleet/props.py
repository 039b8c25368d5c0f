"""Reading a resource's provider inputs (camelCase, numbers as floats) as policies and the cost model see them.

During a real `pulumi preview`, values computed by other resources (the image digest before the build,
a service account's email) are unknown: pulumi_policy raises UnknownValueError when one is read. `dig`
turns that into UNKNOWN so callers can say "can't tell yet" instead of failing or guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pulumi_policy.proxy import UnknownValueError


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


def dig(node: Any, *path: str | int) -> Any:
    """props['template']['scaling']['maxInstanceCount'] -> the value, None if absent, UNKNOWN if unknown."""
    try:
        for key in path:
            if isinstance(key, int):
                if not isinstance(node, Sequence) or isinstance(node, str) or key >= len(node):
                    return None
            elif not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
    except UnknownValueError:
        return UNKNOWN
    return node


def known(*values: Any) -> bool:
    return all(v is not UNKNOWN for v in values)


def cpu_count(value: Any) -> float | None:
    """Cloud Run CPU limits: '2' -> 2.0, '1000m' -> 1.0; None when not a CPU quantity."""
    text = str(value)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return None


_MEMORY_UNITS = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}


def memory_gib(value: Any) -> float | None:
    """Cloud Run memory limits: '4Gi' -> 4.0, '512Mi' -> 0.5; None when not a memory quantity."""
    text = str(value)
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * factor
    return None
