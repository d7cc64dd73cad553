"""dlq_replay: ``orchestrator dlq replay --all`` over N open entries (one failed run each).

Setup inserts the failed runs and their entries in bulk (not timed); the timed part is the
replay itself: every entry locked, its run reopened and its step re-queued, and the step
messages published to Redis (no worker consumes them; the bench flushes its Redis database).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from bench.env import Services


def _failed_runs(n: int) -> None:
    from orchestrator.definition import WorkflowBuilder, build_plan
    from orchestrator.store import Repository, now
    from orchestrator.store import tables as t

    wf = WorkflowBuilder("bench-dlq")
    wf.step("charge", "bench.tasks:noop", with_={"amount": 1})
    plan = build_plan(wf.build(), check_tasks=False)
    from orchestrator.settings import get_settings

    repo = Repository.from_url(get_settings().database_url)
    at = now()
    run_ids = [str(uuid.uuid4()) for _ in range(n)]
    with repo.transaction() as tx:
        tx.save_definition(plan.version, plan.workflow.name, plan.workflow.snapshot())
        tx.c.execute(
            t.runs.insert(),
            [
                {
                    "id": r,
                    "workflow": "bench-dlq",
                    "version": plan.version,
                    "status": "failed",
                    "inputs": {},
                    "error": "charge: ConnectionError: down",
                    "created_at": at,
                    "started_at": at,
                    "finished_at": at,
                }
                for r in run_ids
            ],
        )
        tx.c.execute(
            t.step_runs.insert(),
            [
                {
                    "run_id": r,
                    "step": "charge",
                    "item_index": -1,
                    "status": "failed",
                    "attempts": 3,
                    "lost": 0,
                    "inputs": {"amount": 1},
                    "error": "ConnectionError: down",
                    "worker": "bench:1",
                    "started_at": at,
                    "finished_at": at,
                }
                for r in run_ids
            ],
        )
        ids = {row.run_id: row.id for row in tx.c.execute(t.step_runs.select().where(t.step_runs.c.step == "charge"))}
        tx.c.execute(
            t.dead_letters.insert(),
            [
                {
                    "id": str(uuid.uuid4()),
                    "run_id": r,
                    "step_run_id": ids[r],
                    "workflow": "bench-dlq",
                    "step": "charge",
                    "item_index": None,
                    "task": "bench.tasks:noop",
                    "inputs": {"amount": 1},
                    "error": "ConnectionError: down",
                    "error_type": "ConnectionError",
                    "traceback": None,
                    "attempts": 3,
                    "status": "open",
                    "failed_at": at,
                }
                for r in run_ids
            ],
        )


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    from orchestrator.dlq import replay_all
    from orchestrator.settings import get_settings
    from orchestrator.store import Repository
    from orchestrator.worker.tasks import build_engine

    n = 1_000 if quick else 10_000
    _failed_runs(n)
    engine = build_engine(get_settings(), Repository.from_url(get_settings().database_url))
    start = time.perf_counter()
    replayed = 0
    for batch in replay_all(engine, "bench-dlq"):
        replayed += len(batch.entries)
    elapsed = time.perf_counter() - start
    if replayed != n:
        raise RuntimeError(f"replayed {replayed} of {n} entries")
    yield {"name": "dlq_replay", "n": n, "ours_s": round(elapsed, 3), "per_s": round(n / elapsed)}
