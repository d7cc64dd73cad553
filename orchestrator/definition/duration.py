"""Durations as people write them (``250ms``, ``30s``, ``5m``, ``2h``, ``1d``), held as float seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 3650 * 86400.0  # ten years: longer is a typo, and would overflow date arithmetic
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"


def parse_duration(value: Any) -> float:
    """Seconds for a duration string or a plain number of seconds; ValueError names the fix."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use e.g. 250ms, 30s, 5m, 2h, 1d")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or seconds != seconds:
        raise ValueError(f"invalid duration {value!r}: use e.g. 250ms, 30s, 5m, 2h, 1d")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"invalid duration {value!r}: longer than ten years")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for messages."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 250ms, 30s, 5m, 2h, 1d, or a number of seconds",
        }
    ),
]
