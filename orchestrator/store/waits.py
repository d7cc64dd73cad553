"""Waiting steps, the signal mailbox and approval decisions.

A signal and a step that starts waiting for it may arrive in either order, in two processes at
once. Both sides take the same transaction-scoped lock on the event and key (PostgreSQL's advisory
lock; SQLite serialises every writer anyway), so exactly one of them sees the other: the signal
finds the step waiting, or the step finds the signal in the mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.status import RunStatus
from orchestrator.store import tables as t
from orchestrator.store.rows import StepRow, aware
from orchestrator.store.sql import insert_if_absent

_s = t.step_runs.c
_r = t.runs.c
_g = t.signals.c
_d = t.decisions.c
_WAITING_ROW = sa.text("step_runs.status = 'waiting'")
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")


class WaitQueries:
    c: sa.Connection
    dialect: str

    # Signals

    def lock_signal(self, event: str, key: str) -> None:
        """Serialise, until this transaction ends, everything that delivers or takes this signal."""
        if self.dialect == "postgresql":
            self.c.execute(_LOCK, {"name": f"orchestrator.signal\x1f{event}\x1f{key}"})

    def runs_waiting_on(self, event: str, key: str, run_id: str | None) -> list[str]:
        """Runs with a step waiting on ``event`` and ``key`` that nothing woke yet (to lock first)."""
        query = (
            sa.select(_s.run_id)
            .where(_WAITING_ROW, _s.wait_kind == "event", _s.wait_event == event, _s.wait_key == key)
            .where(_s.wake.is_(None))
            .distinct()
        )
        if run_id is not None:
            query = query.where(_s.run_id == run_id)
        return sorted(r[0] for r in self.c.execute(query))

    def deliver_signal(self, event: str, key: str, data: Any, at: datetime, run_id: str | None) -> list[StepRow]:
        """Hand ``data`` to every step waiting on ``event`` and ``key`` that nothing woke yet: each is
        due now; the caller (or, if it dies, the reconciler) completes them under their run's lock."""
        condition = sa.and_(
            _WAITING_ROW,
            _s.wait_kind == "event",
            _s.wait_event == event,
            _s.wait_key == key,
            _s.wake.is_(None),
        )
        if run_id is not None:
            condition = sa.and_(condition, _s.run_id == run_id)
        statement = (
            t.step_runs.update()
            .where(condition)
            .values(wake="signal", output=data, not_before=at)
            .returning(*t.step_runs.c)
        )
        return sorted((StepRow.from_row(r) for r in self.c.execute(statement)), key=lambda r: (r.run_id, r.id))

    def keep_signal(
        self, event: str, key: str, run_id: str | None, data: Any, by: str | None, at: datetime, expires: datetime
    ) -> int:
        values = {"event": event, "key": key, "run_id": run_id, "data": data, "sent_by": by}
        result = self.c.execute(t.signals.insert().returning(_g.id), {**values, "sent_at": at, "expires_at": expires})
        return int(result.scalar_one())

    def take_signal(self, event: str, key: str, run_id: str, at: datetime) -> tuple[bool, Any]:
        """The oldest kept signal for ``event`` and ``key`` (and this run, or any) that has not
        expired, removed from the mailbox: (True, its data), or (False, None) when there is none."""
        query = (
            sa.select(_g.id, _g.data)
            .where(_g.event == event, _g.key == key, _g.expires_at > at)
            .where(sa.or_(_g.run_id.is_(None), _g.run_id == run_id))
            .order_by(_g.id)
            .limit(1)
        )
        found = self.c.execute(query).first()
        if found is None:
            return False, None
        self.c.execute(t.signals.delete().where(_g.id == found[0]))
        return True, found[1]

    def kept_signals(self, event: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(t.signals).order_by(_g.id)
        if event is not None:
            query = query.where(_g.event == event)
        return [
            dict(r._mapping, sent_at=aware(r.sent_at), expires_at=aware(r.expires_at)) for r in self.c.execute(query)
        ]

    def purge_signals(self, at: datetime, receipts_before: datetime) -> int:
        """Drop kept signals that expired, and receipts older than a signal is kept."""
        self.c.execute(t.signal_receipts.delete().where(t.signal_receipts.c.at < receipts_before))
        return self.c.execute(t.signals.delete().where(_g.expires_at <= at)).rowcount

    def first_receipt(self, signal_id: str, at: datetime) -> bool:
        """Note that this signal id was handled; False when it was before (a duplicate)."""
        return insert_if_absent(self.c, t.signal_receipts, {"id": signal_id, "at": at})

    # Waiting steps

    def due_waits(self, at: datetime, limit: int = 500, run_id: str | None = None) -> list[StepRow]:
        """Waiting steps whose timer, deadline or next attempt is due, or that something woke."""
        query = sa.select(t.step_runs).where(_WAITING_ROW, _s.not_before <= at).order_by(_s.not_before).limit(limit)
        if run_id is not None:
            query = query.where(_s.run_id == run_id)
        return [StepRow.from_row(r) for r in self.c.execute(query)]

    def waiting_approvals(self, limit: int = 1000) -> list[tuple[StepRow, str, str]]:
        """Approvals waiting for a decision, oldest first, with their run's workflow and version."""
        query = (
            sa.select(t.step_runs, _r.workflow.label("run_workflow"), _r.version.label("run_version"))
            .join(t.runs, _r.id == _s.run_id)
            .where(_WAITING_ROW, _s.wait_kind == "approval", _s.wake.is_(None))
            .where(_r.status.in_([str(RunStatus.RUNNING), str(RunStatus.PAUSED)]))
            .order_by(_s.started_at, _s.id)
            .limit(limit)
        )
        found = []
        for r in self.c.execute(query):
            data = dict(r._mapping)
            workflow, version = data.pop("run_workflow"), data.pop("run_version")
            found.append((StepRow.from_row(data), workflow, version))
        return found

    # Decisions

    def add_decision(
        self, row: StepRow, actor: str, decision: str, comment: str | None, data: Any, at: datetime
    ) -> None:
        self.c.execute(
            t.decisions.insert(),
            {
                "run_id": row.run_id,
                "step_run_id": row.id,
                "wait_id": row.dispatch_id,
                "actor": actor,
                "decision": decision,
                "comment": comment,
                "data": data,
                "at": at,
            },
        )

    def decisions(self, step_run_ids: Sequence[int], wait_id: str | None = None) -> list[dict[str, Any]]:
        """Decisions on these steps (on one wait of theirs, if ``wait_id``), oldest first."""
        if not step_run_ids:
            return []
        query = sa.select(t.decisions).where(_d.step_run_id.in_(list(step_run_ids))).order_by(_d.id)
        if wait_id is not None:
            query = query.where(_d.wait_id == wait_id)
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]

    def run_decisions(self, run_id: str) -> list[dict[str, Any]]:
        query = sa.select(t.decisions).where(_d.run_id == run_id).order_by(_d.id)
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]


__all__ = ["WaitQueries"]
