"""What the reconciler and replays ask of the store: lost, due and failed steps, reopened runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import tables as t
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow


class RecoveryQueries:
    """Reconciling and replaying (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def stale_queued(self, cutoff: datetime, limit: int = 500) -> list[StepRow]:
        """Queued steps of running runs whose message should have been taken by ``cutoff``."""
        s, r = t.step_runs.c, t.runs.c
        due = sa.func.coalesce(s.not_before, s.queued_at)
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(s.status == StepStatus.QUEUED, r.status == RunStatus.RUNNING, due < cutoff)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=t.step_runs, skip_locked=True)
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def running_since(self, cutoff: datetime, limit: int = 500) -> list[StepRow]:
        """Steps a worker took before ``cutoff`` and still runs: candidates for a lost worker.

        A foreach step's own row is running while its items are; no worker owns it, so it is never
        a candidate (its items are).
        """
        s, r = t.step_runs.c, t.runs.c
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(
                s.status == StepStatus.RUNNING,
                r.status == RunStatus.RUNNING,
                s.started_at < cutoff,
                s.worker.is_not(None),
            )
            .limit(limit)
        )
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def due_deferred(self, at: datetime, limit: int = 500) -> list[StepRow]:
        """Queued steps held in the database (no message sent) whose wake-up time has come."""
        s, r = t.step_runs.c, t.runs.c
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(
                s.status == StepStatus.QUEUED,
                s.dispatch_id.is_(None),
                s.not_before <= at,
                r.status == RunStatus.RUNNING,
            )
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=t.step_runs, skip_locked=True)
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def reopen_steps_of(self, run_ids: Sequence[str], reasons: Sequence[str]) -> list[tuple[str, str, int]]:
        """``reopen_steps`` for many runs at once; (run, step, item) of each row put back."""
        s = t.step_runs.c
        ended_by_failure = sa.or_(
            sa.and_(s.status == StepStatus.CANCELLED, s.reason.in_(list(reasons))),
            sa.and_(s.status == StepStatus.SKIPPED, sa.or_(s.reason.like("need %"), s.reason == "no need succeeded")),
        )
        statement = (
            t.step_runs.update()
            .where(s.run_id.in_(list(run_ids)), ended_by_failure)
            .values(status=StepStatus.PENDING, reason=None, finished_at=None, dispatch_id=None)
        )
        if self.dialect in ("postgresql", "sqlite"):
            rows = self.c.execute(statement.returning(s.run_id, s.step, s.item_index)).all()
            return [(r[0], r[1], r[2]) for r in rows]
        raise NotImplementedError(self.dialect)

    def requeue_many(self, rows: Sequence[tuple[int, Any, str]], at: datetime) -> None:
        """Failed rows back in the queue with their inputs and a new dispatch token, in one round trip."""
        if not rows:
            return
        s = t.step_runs.c
        statement = (
            t.step_runs.update()
            .where(s.id == sa.bindparam("row_id"))
            .values(
                status=StepStatus.QUEUED,
                inputs=sa.bindparam("new_inputs", type_=t.Json),
                dispatch_id=sa.bindparam("dispatch"),
                queued_at=at,
                error=None,
                traceback=None,
                finished_at=None,
                not_before=None,
                lost=0,
            )
        )
        self.c.execute(statement, [{"row_id": r, "new_inputs": i, "dispatch": d} for r, i, d in rows])

    def first_failures(self, run_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each run's earliest still-failed step: (step, error)."""
        s = t.step_runs.c
        query = (
            sa.select(s.run_id, s.step, s.error)
            .where(s.run_id.in_(list(run_ids)), s.status == StepStatus.FAILED, s.item_index == STEP_ROW)
            .order_by(s.finished_at)
        )
        found: dict[str, tuple[str, str | None]] = {}
        for run_id, step, error in self.c.execute(query):
            found.setdefault(run_id, (step, error))
        return found

    def resume_runs(self, run_ids: Sequence[str], error: str | None = None) -> None:
        if run_ids:
            self.c.execute(
                t.runs.update()
                .where(t.runs.c.id.in_(list(run_ids)))
                .values(status=RunStatus.RUNNING, error=error, outputs=None, finished_at=None)
            )

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """Several runs, locked in id order (the same order everywhere, so no deadlock)."""
        query = sa.select(t.runs).where(t.runs.c.id.in_(sorted(run_ids))).order_by(t.runs.c.id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return {row.id: RunRow.from_row(row) for row in self.c.execute(query)}
