"""What the reconciler and repairs ask of the store: lost messages, due wake-ups, stuck runs, reopened runs.

Changes here are compare-and-set updates on one row (the dispatch token must still be the one the
caller saw), so any number of reconcilers may run at once without locking runs in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import tables as t
from orchestrator.store.clock import db_now
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow
from orchestrator.store.sql import among

_s = t.step_runs.c
_r = t.runs.c


_FRESH: dict[str, Any] = {
    "status": str(StepStatus.PENDING),
    "attempts": 0,
    "inputs": None,
    "output": None,
    "error": None,
    "traceback": None,
    "reason": None,
    "worker": None,
    "dispatch_id": None,
    "lost": 0,
    "worker_id": None,
    "lease_expires_at": None,
    "wait_kind": None,
    "wait_event": None,
    "wait_key": None,
    "wake": None,
    "cached": None,
    "not_before": None,
    "queued_at": None,
    "started_at": None,
    "finished_at": None,
}


class RecoveryQueries:
    """Reconciling and repairing (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    # Messages

    def stale_queued(self, cutoff: datetime, limit: int = 500) -> list[StepRow]:
        """Queued steps of running runs, with a message sent, that no worker took by ``cutoff``."""
        due = sa.func.coalesce(_s.not_before, _s.queued_at)
        query = (
            sa.select(t.step_runs)
            .join(t.runs, _r.id == _s.run_id)
            .where(
                _s.status == StepStatus.QUEUED,
                _s.dispatch_id.is_not(None),
                _r.status == RunStatus.RUNNING,
                due < cutoff,
            )
            .order_by(_s.queued_at)
            .limit(limit)
        )
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def redispatch(self, step_run_id: int, old: str | None, new: str, at: datetime) -> bool:
        """Give a queued step a new message token, if it still has ``old`` (None: held, no message)."""
        token = _s.dispatch_id.is_(None) if old is None else _s.dispatch_id == old
        result = self.c.execute(
            t.step_runs.update()
            .where(_s.id == step_run_id, _s.status == StepStatus.QUEUED, token)
            .values(dispatch_id=new, queued_at=at, not_before=None)
        )
        return result.rowcount == 1

    def unsend(self, tokens: Sequence[tuple[int, str]], at: datetime) -> int:
        """Messages that could not be published: their steps are held in the database, due now,
        for the reconciler to send again."""
        if not tokens:
            return 0
        statement = (
            t.step_runs.update()
            .where(
                _s.id == sa.bindparam("row_id"),
                _s.dispatch_id == sa.bindparam("token"),
                _s.status == StepStatus.QUEUED,
            )
            .values(dispatch_id=None, not_before=at)
        )
        return self.c.execute(statement, [{"row_id": r, "token": d} for r, d in tokens]).rowcount

    def due_deferred(self, at: datetime, limit: int = 500, run_id: str | None = None) -> list[StepRow]:
        """Queued steps held in the database (no message sent) whose wake-up time has come."""
        query = (
            sa.select(t.step_runs)
            .join(t.runs, _r.id == _s.run_id)
            .where(
                _s.status == StepStatus.QUEUED,
                _s.dispatch_id.is_(None),
                _s.not_before <= at,
                _r.status == RunStatus.RUNNING,
            )
            .order_by(_s.not_before)
            .limit(limit)
        )
        if run_id is not None:
            query = query.where(_s.run_id == run_id)
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def stuck_runs(self, limit: int = 100) -> list[str]:
        """Running runs with nothing in flight: no step queued or waiting, and none held by a worker."""
        in_flight = (
            sa.select(_s.id)
            .where(
                _s.run_id == _r.id,
                sa.or_(
                    _s.status.in_([str(StepStatus.QUEUED), str(StepStatus.WAITING)]),
                    sa.and_(_s.status == StepStatus.RUNNING, _s.lease_expires_at.is_not(None)),
                ),
            )
            .exists()
        )
        query = sa.select(_r.id).where(_r.status == RunStatus.RUNNING, ~in_flight).order_by(_r.id).limit(limit)
        return [r[0] for r in self.c.execute(query)]

    def now_on_store(self) -> datetime:
        value = self.c.execute(sa.select(db_now(self.dialect))).scalar_one()
        assert isinstance(value, datetime)
        return value

    # Repairs: reopening what a failure ended

    def reopen_steps_of(
        self, run_ids: Sequence[str], cancelled: Sequence[str], parents: str
    ) -> list[tuple[str, str, int, str]]:
        """Put back what a failure ended without running: rows cancelled for one of the
        ``cancelled`` reasons go back to pending, foreach steps cancelled for ``parents`` (their
        items were) back to running, and steps skipped for a need back to pending, to be judged
        again. (run, step, item, new status) of each row put back."""
        ended_by_failure = sa.or_(
            sa.and_(_s.status == StepStatus.CANCELLED, _s.reason.in_([*cancelled, parents])),
            sa.and_(
                _s.status == StepStatus.SKIPPED,
                sa.or_(_s.reason.like("need %"), _s.reason == "no need succeeded"),
            ),
        )
        status = sa.case((_s.reason == parents, str(StepStatus.RUNNING)), else_=str(StepStatus.PENDING))
        statement = (
            t.step_runs.update()
            .where(among(_s.run_id, run_ids, self.dialect), ended_by_failure)
            .values(status=status, reason=None, finished_at=None, dispatch_id=None)
            .returning(_s.run_id, _s.step, _s.item_index, _s.status)
        )
        return [(r[0], r[1], r[2], r[3]) for r in self.c.execute(statement)]

    def requeue_many(self, rows: Sequence[tuple[int, Any, str]], at: datetime) -> set[int]:
        """Failed rows back in the queue with their inputs and a new dispatch token, in one round
        trip; the ids of the rows that were failed and are now queued."""
        if not rows:
            return set()
        ids = [r for r, _, _ in rows]
        # By primary key alone, the status checked here: a planner short of statistics (a table
        # just filled) would otherwise scan every failed row and test each against every id.
        found = self.c.execute(sa.select(_s.id, _s.status).where(among(_s.id, ids, self.dialect)))
        failed = {row_id for row_id, status in found if status == StepStatus.FAILED}
        todo = [r for r in rows if r[0] in failed]
        if not todo:
            return set()
        statement = (
            t.step_runs.update()
            .where(_s.id == sa.bindparam("row_id"))
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
        self.c.execute(statement, [{"row_id": r, "new_inputs": i, "dispatch": d} for r, i, d in todo])
        return failed

    def reopen_failed(self, step_run_ids: Sequence[int]) -> set[int]:
        """Failed step rows back to pending, to be evaluated again (their inputs were never rendered)."""
        if not step_run_ids:
            return set()
        statement = (
            t.step_runs.update()
            .where(_s.id.in_(list(step_run_ids)), _s.status == StepStatus.FAILED)
            .values(status=StepStatus.PENDING, error=None, traceback=None, finished_at=None, reason=None)
            .returning(_s.id)
        )
        return {r[0] for r in self.c.execute(statement)}

    def reopen_parents(self, run_id: str, steps: Sequence[str]) -> None:
        """Foreach steps whose items were put back run again."""
        self.c.execute(
            t.step_runs.update()
            .where(_s.run_id == run_id, _s.item_index == STEP_ROW, _s.step.in_(list(steps)))
            .values(status=StepStatus.RUNNING, error=None, reason=None, finished_at=None, output=None)
        )

    def first_failures(self, run_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each run's earliest still-failed step: (step, error).

        The status test is written so that it is no index condition: the rows are found through the
        runs' ids, never through the status index, which a planner short of statistics (a table just
        filled) would pick, testing every failed row in the table against every id."""
        failed = (_s.status == StepStatus.FAILED).is_(sa.true())
        query = (
            sa.select(_s.run_id, _s.step, _s.error)
            .where(among(_s.run_id, run_ids, self.dialect), _s.item_index == STEP_ROW, failed)
            .order_by(_s.finished_at)
        )
        found: dict[str, tuple[str, str | None]] = {}
        for run_id, step, error in self.c.execute(query):
            found.setdefault(run_id, (step, error))
        return found

    def resume_runs(self, run_ids: Sequence[str], error: str | None = None) -> None:
        """Runs reopened after a repair go on: running again, or still paused if a person paused them."""
        if run_ids:
            status = sa.case((_r.status == str(RunStatus.PAUSED), str(RunStatus.PAUSED)), else_=str(RunStatus.RUNNING))
            self.c.execute(
                t.runs.update()
                .where(among(_r.id, run_ids, self.dialect))
                .values(status=status, error=error, outputs=None, finished_at=None)
            )

    def reset_steps(self, run_id: str, steps: Sequence[str], whole: bool) -> None:
        """Steps to run again, as if never run. ``whole``: a foreach's items go too (it expands
        again); otherwise its failed and cancelled items go back to pending with their inputs, its
        succeeded ones keep their outputs, and the step is running again."""
        if not steps:
            return
        names = list(steps)
        fresh = dict(_FRESH)
        items = sa.and_(_s.run_id == run_id, _s.step.in_(names), _s.item_index >= 0)
        parents: set[str] = set()
        if whole:
            self.c.execute(t.step_runs.delete().where(items))
        else:
            parents = {r[0] for r in self.c.execute(sa.select(_s.step).where(items).distinct())}
            ended = sa.and_(items, _s.status.in_([str(StepStatus.FAILED), str(StepStatus.CANCELLED)]))
            self.c.execute(t.step_runs.update().where(ended).values({k: v for k, v in fresh.items() if k != "inputs"}))
        rows = sa.and_(_s.run_id == run_id, _s.item_index == STEP_ROW)
        if parents:
            again = {"status": str(StepStatus.RUNNING), "error": None, "reason": None, "finished_at": None}
            self.c.execute(t.step_runs.update().where(rows, _s.step.in_(sorted(parents))).values(again))
        others = [n for n in names if n not in parents]
        if others:
            self.c.execute(t.step_runs.update().where(rows, _s.step.in_(others)).values(fresh))

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """Several runs, locked in id order (the same order everywhere, so no deadlock)."""
        query = sa.select(t.runs).where(among(_r.id, sorted(run_ids), self.dialect)).order_by(_r.id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return {row.id: RunRow.from_row(row) for row in self.c.execute(query)}
