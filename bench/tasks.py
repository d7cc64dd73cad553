"""No-op work for both sides: our steps (``bench.tasks:noop``) and the raw Celery baseline app."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery


def noop(**_: Any) -> None:
    """A step that does nothing: what is measured is the orchestration around it."""
    return None


baseline = Celery("bench-baseline")
baseline.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"),
    result_backend=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="bench-baseline",
    broker_connection_retry_on_startup=True,
)


@baseline.task(name="bench.noop", ignore_result=True)
def raw_noop(*_: Any, **__: Any) -> None:
    return None


@baseline.task(name="bench.noop_result")
def raw_noop_result(*_: Any, **__: Any) -> None:
    """A chord's header tasks must store results: that is how Celery counts them."""
    return None


@baseline.task(name="bench.mark", ignore_result=True)
def mark(key: str, *_: Any) -> None:
    baseline.backend.client.set(key, 1)


@baseline.task(name="bench.count", ignore_result=True)
def count(key: str) -> None:
    baseline.backend.client.incr(key)


def work(ms: float = 20.0, **_: Any) -> float:
    """A step that takes ``ms`` milliseconds: what a cache hit saves."""
    import time

    time.sleep(ms / 1000)
    return ms
