"""state: one recorded state transition against a raw psycopg INSERT+COMMIT; and the floors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from bench.env import Services


def _per_op(fn: Any, n: int) -> float:
    fn()  # warm up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _timed_transitions(transition: Any, reset: Any, n: int) -> float:
    transition(reset())
    total = 0.0
    for _ in range(n):
        token = reset()
        start = time.perf_counter()
        transition(token)
        total += time.perf_counter() - start
    return total / n


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    from orchestrator.definition import WorkflowBuilder, build_plan
    from orchestrator.runtime import operations
    from orchestrator.runtime.engine import Engine
    from orchestrator.status import StepStatus
    from orchestrator.store import Repository, now

    n = 300 if quick else 2000
    repo = Repository.from_url(services.database_url)
    wf = WorkflowBuilder("bench-state")
    wf.step("s", "bench.tasks:noop")
    submitted = operations.submit(Engine.create(repo), build_plan(wf.build(), check_tasks=False), {})
    with repo.transaction() as tx:
        row = tx.steps(submitted.run_id)["s"]
    detail = {"attempt": 1, "worker": "bench-host:12345"}
    with repo.transaction() as tx:
        worker_id = tx.register_worker("bench-host:12345")

    def reset() -> str:
        """Untimed: put the step back in the queue under a new dispatch token."""
        token = str(uuid.uuid4())
        with repo.transaction() as tx:
            tx.update_step(row.id, status=StepStatus.QUEUED, dispatch_id=token)
        return token

    def transition(token: str) -> None:
        """One recorded state transition, as the runtime records it: a worker claiming a step under
        a lease (the step row, its lease and its event, durable, in one statement)."""
        with repo.statements() as tx:
            assert tx.claim(row.id, token, worker_id, "bench-host:12345", 30.0, now()) is not None

    dsn = make_url(services.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            # A real table, as durable as ours: a temporary table's commit does not wait for the disk
            "CREATE TABLE raw_events (id bigserial PRIMARY KEY, run_id varchar(36), "
            "step varchar(200), item_index int, kind varchar(40), detail jsonb, at timestamptz)"
        )
        conn.commit()

        def raw_insert() -> None:
            conn.execute(
                "INSERT INTO raw_events (run_id, step, item_index, kind, detail, at) VALUES (%s, %s, %s, %s, %s, %s)",
                (row.run_id, row.step, None, "step.running", Jsonb(detail), datetime.now(UTC)),
            )
            conn.commit()

        baseline = _per_op(raw_insert, n)
        ours = _timed_transitions(transition, reset, n)
        floor_pg = baseline
    yield {
        "name": "state",
        "n": n,
        "baseline_s": round(baseline, 6),
        "ours_s": round(ours, 6),
        "ratio": round(ours / baseline, 2),
    }
    ping = _per_op(services.redis.ping, n)
    yield {"name": "floor_redis_ping", "n": n, "ours_s": round(ping, 6)}
    yield {"name": "floor_pg_insert_commit", "n": n, "ours_s": round(floor_pg, 6)}
    repo.engine.dispose()
