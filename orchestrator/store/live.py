"""The queries behind live updates (``orchestrator.api.live``): which runs the event log says
changed, and the rows of several runs at once."""

from __future__ import annotations

from collections.abc import Sequence

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

    def runs_by_id(self, run_ids: Sequence[str]) -> list[RunRow]:
        if not run_ids:
            return []
        query = sa.select(t.runs).where(among(t.runs.c.id, list(run_ids), self.dialect))
        return [RunRow.from_row(r) for r in self.c.execute(query)]

    def open_runs(self, limit: int) -> list[RunRow]:
        """The runs that have not ended, the latest ``limit`` of them."""
        r = t.runs.c
        query = sa.select(t.runs).where(r.status.in_(RunStatus.open_values())).order_by(r.created_at.desc())
        return [RunRow.from_row(row) for row in self.c.execute(query.limit(limit))]
