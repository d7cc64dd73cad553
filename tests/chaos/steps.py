"""Step functions for the drills: each execution is written to a ledger outside the orchestrator.

A line ``start NAME PID`` when the function begins and ``done NAME PID`` when it returns, so a drill
counts executions (and re-executions) independently of what the state store recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _write(path: str, line: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def work(ledger: str, name: str, seconds: float = 0.2) -> str:
    """Record the start, take ``seconds``, record the end."""
    _write(ledger, f"start {name} {os.getpid()}")
    time.sleep(seconds)
    _write(ledger, f"done {name} {os.getpid()}")
    return name
