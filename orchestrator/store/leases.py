"""Workers and leases: ids the database issues, heartbeats and lease expiry on the database's clock.

A claimed step carries its holder (``worker_id``) and when its lease lapses. The holder renews the
leases of the steps it is running; a step whose lease has lapsed is lost, whoever held it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.status import StepStatus
from orchestrator.store import tables as t
from orchestrator.store.clock import db_later, db_now
from orchestrator.store.rows import StepRow


class LeaseQueries:
    """The workers table and the leases on step rows (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def register_worker(self, name: str) -> int:
        """A new worker id for a process that is about to run steps."""
        at = db_now(self.dialect)
        statement = t.workers.insert().values(name=name, started_at=at, last_seen=at).returning(t.workers.c.id)
        return int(self.c.execute(statement).scalar_one())

    def renew_leases(self, worker_id: int, step_run_ids: Sequence[int], lease_s: float) -> bool:
        """Say the worker is alive and extend the leases of the steps it runs; False when the
        worker's row is gone (it was judged dead and pruned: the caller registers again)."""
        w = t.workers.c
        beat = self.c.execute(t.workers.update().where(w.id == worker_id).values(last_seen=db_now(self.dialect)))
        if step_run_ids:
            s = t.step_runs.c
            self.c.execute(
                t.step_runs.update()
                .where(s.id.in_(list(step_run_ids)), s.worker_id == worker_id, s.status == StepStatus.RUNNING)
                .values(lease_expires_at=db_later(self.dialect, lease_s))
            )
        return beat.rowcount == 1

    def lease_lapsed(self, step_run_id: int) -> bool:
        s = t.step_runs.c
        query = sa.select(sa.and_(s.lease_expires_at.is_not(None), s.lease_expires_at < db_now(self.dialect))).where(
            s.id == step_run_id
        )
        return bool(self.c.execute(query).scalar())

    def take_over(self, step_run_id: int, worker_id: int, worker: str, lease_s: float, at: datetime) -> None:
        """This worker now runs a step whose lease lapsed: a new attempt under a new lease."""
        s = t.step_runs.c
        self.c.execute(
            t.step_runs.update()
            .where(s.id == step_run_id)
            .values(
                attempts=s.attempts + 1,
                worker=worker,
                worker_id=worker_id,
                started_at=at,
                error=None,
                lease_expires_at=db_later(self.dialect, lease_s),
            )
        )

    def release(self, step_run_id: int, attempt: int, why: str) -> bool:
        """Give up a claim at once (its lease lapses now), so a redelivery or the reconciler retakes it."""
        s = t.step_runs.c
        result = self.c.execute(
            t.step_runs.update()
            .where(s.id == step_run_id, s.attempts == attempt, s.status == StepStatus.RUNNING)
            .values(lease_expires_at=db_now(self.dialect), error=why)
        )
        return result.rowcount == 1

    def lapsed_leases(self, limit: int = 500) -> list[StepRow]:
        """Running steps whose lease has lapsed: their holder died, hung up, or gave them back."""
        s = t.step_runs.c
        query = (
            sa.select(t.step_runs)
            .where(s.status == StepStatus.RUNNING, s.lease_expires_at < db_now(self.dialect))
            .order_by(s.run_id, s.id)
            .limit(limit)
        )
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def prune_workers(self, older_than_s: float) -> int:
        """Forget workers not seen for a long time (their leases lapsed long ago)."""
        w = t.workers.c
        cutoff = db_later(self.dialect, -older_than_s)
        return self.c.execute(t.workers.delete().where(w.last_seen < cutoff)).rowcount

    def worker_names(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.c.execute(sa.select(t.workers.c.id, t.workers.c.name))}
