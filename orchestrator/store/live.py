"""The queries behind live updates (``orchestrator.api.live``): which runs the event log says
changed, and the rows of several runs at once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.status import RunStatus
from orchestrator.store import tables as t
from orchestrator.store.rows import RunRow
from orchestrator.store.sql import among


class LiveQueries:
    """The live-update queries (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def last_event_id(self) -> int:
        return int(self.c.execute(sa.select(sa.func.max(t.events.c.id))).scalar() or 0)

    def runs_logged_after(self, after_id: int) -> tuple[int, list[str]]:
        """The highest event id above ``after_id`` (else ``after_id``) and the runs those events
        are of: one range read of the primary key, for a poller that follows the whole log."""
        e = t.events.c
        query = sa.select(e.run_id, sa.func.max(e.id)).where(e.id > after_id).group_by(e.run_id)
        rows = self.c.execute(query).all()
        return max([after_id, *(int(r[1]) for r in rows)]), sorted(r[0] for r in rows)

    def runs_by_id(self, run_ids: Sequence[str]) -> list[RunRow]:
        if not run_ids:
            return []
        query = sa.select(t.runs).where(among(t.runs.c.id, list(run_ids), self.dialect))
        return [RunRow.from_row(r) for r in self.c.execute(query)]

    def runs_open_or_ended_since(self, since: datetime) -> list[RunRow]:
        """Every run that has not ended, and those that ended after ``since``: what may have
        changed status while a follower of the log was not looking."""
        r = t.runs.c
        query = sa.select(t.runs).where(sa.or_(r.status.in_(RunStatus.open_values()), r.finished_at > since))
        return [RunRow.from_row(row) for row in self.c.execute(query)]
