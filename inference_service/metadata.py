"""What an ultralytics ONNX export says about itself, without onnxruntime: the plan reads it too.

`fleet plan` checks every model file of a stack against the tasks this server serves, on machines that
have only the plan's dependencies, so this module imports nothing beyond the standard library.
"""

from __future__ import annotations

import ast
from typing import Any

SUPPORTED_TASKS = ("detect", "pose")
DEFAULT_TASK = "detect"  # what the server assumes when an export names no task


def literal(value: str | None, default: Any) -> Any:
    """Ultralytics writes metadata values as Python literals (``"{0: 'person'}"``, ``"[640, 640]"``)."""
    if value is None:
        return default
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
