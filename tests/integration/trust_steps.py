"""Step functions for the regression tests of the trusted core."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def sleep_then(value: Any = None, seconds: float = 2.0) -> Any:
    time.sleep(seconds)
    return value


def nul_text() -> str:
    return "before\x00after"


def needs_flag(flag: str, value: Any = "ok") -> Any:
    if not Path(flag).exists():
        raise ConnectionError(f"{flag} is not there yet")
    return value


def named(name: str, func: str) -> dict[str, str]:
    return {"name": name, "func": func}
