"""Paged reads for the HTTP API: runs by keyset on (created_at, id), a foreach step's items by
offset, with their counts summed in SQL, so a page costs what it shows, not the size of the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow

_r = t.runs.c
_s = t.step_runs.c


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    workflow: str | None = None
    parent: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


@dataclass(frozen=True)
class ItemCounts:
    """A foreach step's items in numbers: how many, by status, cached, attempts summed."""

    total: int
    statuses: dict[str, int]
    cached: int
    attempts: int


class PageQueries:
    c: sa.Connection

    def runs_page(self, where: RunFilter, limit: int, after: tuple[datetime, str] | None = None) -> list[RunRow]:
        """Runs newest first (ties by id, highest first), at most ``limit``, those after the
        ``after`` key (the last one of the previous page) only."""
        return [RunRow.from_row(r) for r in self.c.execute(runs_query(where, limit, after))]

    def item_counts(self, run_id: str, step: str) -> ItemCounts | None:
        """The step's items counted in one grouped query; None when it has none (not expanded)."""
        query = (
            sa.select(
                _s.status,
                sa.func.count(),
                sa.func.sum(sa.case((_s.cached.is_(True), 1), else_=0)),
                sa.func.sum(_s.attempts),
            )
            .where(_s.run_id == run_id, _s.step == step, _s.item_index != STEP_ROW)
            .group_by(_s.status)
        )
        rows = list(self.c.execute(query))
        if not rows:
            return None
        statuses = {str(r[0]): int(r[1]) for r in rows}
        return ItemCounts(
            total=sum(statuses.values()),
            statuses=dict(sorted(statuses.items())),
            cached=sum(int(r[2] or 0) for r in rows),
            attempts=sum(int(r[3] or 0) for r in rows),
        )

    def items_page(self, run_id: str, step: str, offset: int, limit: int) -> list[StepRow]:
        """The step's items from index ``offset`` on, at most ``limit``, in index order."""
        query = (
            sa.select(t.step_runs)
            .where(_s.run_id == run_id, _s.step == step, _s.item_index >= offset)
            .order_by(_s.item_index)
            .limit(limit)
        )
        return [StepRow.from_row(r) for r in self.c.execute(query)]

    def children_of(self, step_run_ids: Sequence[int]) -> dict[int, str]:
        """The newest child run of each of these step rows (a retry starts a new one)."""
        if not step_run_ids:
            return {}
        query = (
            sa.select(_r.parent_step_run_id, _r.id)
            .where(_r.parent_step_run_id.in_(list(step_run_ids)))
            .order_by(_r.created_at, _r.id)
        )
        found: dict[int, Any] = {}
        for parent, child in self.c.execute(query):
            found[int(parent)] = child
        return found


def runs_query(where: RunFilter, limit: int, after: tuple[datetime, str] | None = None) -> sa.Select[Any]:
    """The query of ``PageQueries.runs_page``."""
    query = sa.select(t.runs).order_by(_r.created_at.desc(), _r.id.desc()).limit(limit)
    conditions = [
        _r.status == where.status if where.status else None,
        _r.workflow == where.workflow if where.workflow else None,
        _r.parent_run_id == where.parent if where.parent else None,
        _r.created_at >= where.since if where.since else None,
        _r.created_at < where.until if where.until else None,
    ]
    if after is not None:
        # A row-value comparison is a range on ix_runs_created_at_id (an OR of the two cases is
        # not: it filtered every row before the page). The bound on created_at alone lets the
        # (status | workflow, created_at) indexes range too when a filter picks one of them.
        at, run_id = after
        conditions += [_r.created_at <= at, sa.tuple_(_r.created_at, _r.id) < sa.tuple_(at, run_id)]
    return query.where(*[c for c in conditions if c is not None])
