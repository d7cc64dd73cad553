"""Step functions for the live-update tests: a step that holds until the test lets it go."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def hold(path: str, value: Any = None, patience: float = 60.0) -> Any:
    """Run until ``path`` exists (the test decides when this step succeeds), then return ``value``."""
    deadline = time.monotonic() + patience
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {patience}s")
        time.sleep(0.02)
    return value
