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


def fails_until(flag: str, value: Any = "done") -> Any:
    """Fails until the flag file exists: a downstream service that is down, then fixed."""
    if not Path(flag).exists():
        raise ConnectionError(f"{flag} is not there yet")
    return value


def positive(x: float) -> float:
    if x <= 0:
        raise ValueError(f"x must be positive, got {x}")
    return x * 10


def flaky(counter: str, failures: int = 1) -> int:
    """Fails the first ``failures`` calls, then succeeds; every call is counted in a file."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= failures:
        raise ConnectionError(f"call {calls} fails")
    return calls


def kill_own_worker() -> None:
    """A poison step: it takes down the process running it, like a segfault or the OOM killer."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def nap_marked(path: str, value: Any = None, seconds: float = 1.0) -> Any:
    """Touch ``path`` (this step is running), then sleep."""
    Path(path).touch()
    time.sleep(seconds)
    return value


def fail_once_started(path: str, message: str = "boom", patience: float = 30.0) -> None:
    """Fail, but only once ``path`` exists: the step that touches it is surely running by then."""
    deadline = time.monotonic() + patience
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    raise ValueError(message)
