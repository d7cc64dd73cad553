"""Step functions the integration tests run on real workers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def echo(value: Any = None, **extra: Any) -> Any:
    return value if not extra else {"value": value, **extra}


def add(a: float, b: float) -> float:
    return a + b


def total(values: list[float]) -> float:
    return sum(values)


def nap(value: Any = None, seconds: float = 0.05) -> Any:
    time.sleep(seconds)
    return value


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def unserialisable() -> Any:
    return {1, 2, 3}


def ledger(path: str, name: str, seconds: float = 0.0) -> str:
    """Sleep, then append this step's name to the ledger: the record of what really ran to the end."""
    time.sleep(seconds)
    with Path(path).open("a") as handle:
        handle.write(f"{name} {os.getpid()}\n")
    return name


def _register_celery_task() -> None:
    """A plain Celery task, as a team already has them: steps may name it instead of module:function."""
    from orchestrator.worker.app import app

    @app.task(name="shop.double")
    def double(value: int) -> int:
        return value * 2


_register_celery_task()
