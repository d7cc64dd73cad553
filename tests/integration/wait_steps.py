"""Step functions for the waits and repairs tests: a ledger of starts and ends, written by the steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def mark(path: str, name: str, seconds: float = 0.0, value: Any = None) -> Any:
    """Write 'start NAME' when the step starts and 'end NAME' when it ends: what ran, and when."""
    with Path(path).open("a") as handle:
        handle.write(f"start {name}\n")
    time.sleep(seconds)
    with Path(path).open("a") as handle:
        handle.write(f"end {name}\n")
    return name if value is None else value


def broken_until(flag: str, path: str, name: str) -> str:
    """Fails until the flag file exists; each call is in the ledger."""
    with Path(path).open("a") as handle:
        handle.write(f"start {name}\n")
    if not Path(flag).exists():
        raise ConnectionError(f"{flag} is not there yet")
    return name


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
