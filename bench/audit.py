"""audit: what an audit record costs on PostgreSQL.

``audit_append``: n appends, one transaction each, without the advisory lock (``baseline_s``) and
with it (``ours_s``): the price of serialising the chain when nobody contends. ``audit_append_8``:
the same n appends from 8 threads at once, with the lock (``ours_s``, a floor: without the lock
they would fork the chain). ``audit_submit``: n run submits with the audit record turned off
(``baseline_s``) and on (``ours_s``): the record's share of a real change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from bench.env import Services
from bench.runs import line


def _timed(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def _interleaved(fn: Callable[[], None], without: Any, n: int, rounds: int = 10) -> tuple[float, float]:
    """(time without, time with) for n calls each, in alternating batches, so drift and other load
    on the machine weigh on both sides alike; ``without`` is a context manager factory."""
    fn()  # warm up
    bare = full = 0.0
    for _ in range(rounds):
        with without():
            bare += _timed(fn, n // rounds)
        full += _timed(fn, n // rounds)
    return bare, full


@contextmanager
def _unlocked() -> Iterator[None]:
    from orchestrator.store import Tx

    with mock.patch.object(Tx, "lock_audit", lambda self: None):
        yield


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    from orchestrator import audit
    from orchestrator.definition import WorkflowBuilder, build_plan
    from orchestrator.runtime import operations
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.operations import Who
    from orchestrator.store import Repository

    n = 300 if quick else 3000
    repo = Repository.from_url(services.database_url)
    who = Who("bench", "measuring")

    def append() -> None:
        with repo.transaction() as tx:
            audit.record(tx, who, "cache.clear", "cache:bench", {"cleared": 1})

    unlocked, locked = _interleaved(append, _unlocked, n)
    extra_ms = round((locked - unlocked) / n * 1000, 3)
    yield line("audit_append", n, unlocked, locked, per_append_ms=round(locked / n * 1000, 3), lock_ms=extra_ms)

    def writer() -> None:
        for _ in range(n // 8):
            append()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = time.perf_counter() - start
    yield {"name": "audit_append_8", "n": n // 8 * 8, "ours_s": round(concurrent, 3)}

    wf = WorkflowBuilder("bench-audit")
    wf.step("s", "bench.tasks:noop")
    plan, engine = build_plan(wf.build(), check_tasks=False), Engine.create(repo)

    def submit() -> None:
        operations.submit(engine, plan, {}, None, who, "client")

    m = n // 3
    bare, audited = _interleaved(submit, lambda: mock.patch.object(operations.audit, "record", lambda *a, **k: 0), m)
    yield line("audit_submit", m, bare, audited, record_ms=round((audited - bare) / m * 1000, 3))
    verified = audit.verify(repo)
    assert verified.ok, verified.problem
