"""Costs that must not grow with the work, and leases judged by the database's clock (PostgreSQL).

Costs are counted, never timed: the rows the store hands back while one step completes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.definition import WorkflowBuilder, build_plan, item
from orchestrator.runtime import executor as executor_module
from orchestrator.runtime import operations
from orchestrator.runtime import reconciler as reconciler_module
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.reconciler import reconcile
from orchestrator.store import Repository, now

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    instance = Repository.from_url(database_url)
    yield instance
    instance.engine.dispose()


def engine_for(repo: Repository, **timing: Any) -> Engine:
    return Engine.create(
        repo, Recorder(), lambda task: lambda **kw: kw.get("value", 1), timing=Timing(**timing), renew_leases=False
    )


@contextmanager
def rows_read(repo: Repository) -> Iterator[list[int]]:
    """Counts the step rows PostgreSQL reads (sequential and index fetches) in each transaction,
    from the backend's own statistics, taken when the transaction starts and just before it commits."""
    counted: list[int] = []
    real = repo.transaction
    stats = sa.text(
        "SELECT coalesce(sum(seq_tup_read), 0) + coalesce(sum(idx_tup_fetch), 0) FROM pg_stat_xact_user_tables "
        "WHERE relname = 'step_runs'"
    )

    @contextmanager
    def measured() -> Iterator[Any]:
        with real() as tx:
            tx.c.exec_driver_sql("SET LOCAL enable_seqscan = off")  # plan as for a table too big to read whole
            before = int(tx.c.execute(stats).scalar_one())
            yield tx
            counted.append(int(tx.c.execute(stats).scalar_one()) - before)

    repo.transaction = measured  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        repo.transaction = real  # type: ignore[method-assign]


def analyze(repo: Repository) -> None:
    """Table statistics as autovacuum keeps them, so PostgreSQL plans as it would in production."""
    with repo.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE step_runs")


def most_read_per_completion(repo: Repository, engine: Engine, dispatches: list[Any]) -> list[int]:
    """Deliver every message until the run ends; the step rows read by each completion."""
    pending = list(dispatches)
    per_completion = []
    while pending:
        message = pending.pop(0)
        with rows_read(repo) as counted:
            found = Executor(engine).execute(message.step_run_id, message.dispatch_id)
        per_completion.append(sum(counted))
        pending += found
    return per_completion


@pytest.mark.parametrize("size", [30, 300])
def test_a_foreach_item_completion_reads_the_same_rows_whatever_the_items(repo: Repository, size: int) -> None:
    wf = WorkflowBuilder("fan", inputs={"type": "object"})
    fan = wf.step("fan", "model:work", foreach="${{ inputs.items }}", concurrency=4, with_={"value": item})
    wf.step("after", "model:work", needs=[fan])
    engine = engine_for(repo)
    submitted = operations.submit(engine, build_plan(wf.build(), check_tasks=False), {"items": list(range(size))})
    analyze(repo)
    reads = most_read_per_completion(repo, engine, submitted.dispatches)
    # The completion that closes the foreach reads its items once; every other one reads a handful
    assert len(reads) == size + 1
    assert max(reads[: size - 1]) <= 40, reads[:10]


@pytest.mark.parametrize("width", [4, 60])
def test_a_join_is_counted_down_not_reloaded_on_every_branch(repo: Repository, width: int) -> None:
    wf = WorkflowBuilder("join")
    branches = [wf.step(f"b{i}", "model:work") for i in range(width)]
    wf.step("join", "model:work", needs=branches)
    engine = engine_for(repo)
    submitted = operations.submit(engine, build_plan(wf.build(), check_tasks=False), {})
    reads = most_read_per_completion(repo, engine, submitted.dispatches)
    # Every branch but the last reads a bounded number of rows; the last loads the join's needs once
    assert max(reads[: width - 1]) <= 10, reads[:10]


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_leases_are_judged_by_the_database_clock_not_the_workers(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, skew: timedelta
) -> None:
    # Given a worker whose clock is ten minutes off claiming a step under a 30 s lease
    engine = engine_for(repo, lease_s=30, stale_s=600)
    wf = WorkflowBuilder("skewed")
    wf.step("only", "model:work")
    submitted = operations.submit(engine, build_plan(wf.build(), check_tasks=False), {})
    [message] = submitted.dispatches
    assert engine.lease is not None
    holder = engine.lease.holder()
    with repo.statements() as tx:
        assert tx.claim(message.step_run_id, message.dispatch_id, holder.id, holder.name, 30, now() + skew)
    # When reconcilers whose clocks disagree look at it
    for offset in (skew, -skew, timedelta(0)):
        monkeypatch.setattr(reconciler_module, "now", lambda offset=offset: now() + offset)
        monkeypatch.setattr(executor_module, "now", lambda offset=offset: now() + offset)
        # Then the live lease is live for every one of them
        assert reconcile(engine).lapsed == 0
    with repo.transaction() as tx:
        assert str(tx.steps(submitted.run_id)["only"].status) == "running"
