"""The queries behind ``/metrics``: a handful of aggregates over the whole store, one row per
workflow, step and status (never per run), so what a scrape returns is bounded by the number of
workflows and steps however many runs there are.

Counters and histograms are read from the rows every worker writes, not kept in any process:
they are the same whichever process serves the scrape, and survive restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import STEP_ROW
from orchestrator.store.stats import bucket_counts, seconds_between

_r, _s, _a = t.runs.c, t.step_runs.c, t.attempts.c


class MetricQueries:
    c: sa.Connection
    dialect: str

    def runs_by_status(self) -> list[tuple[str, str, int]]:
        """(workflow, status, runs)."""
        query = sa.select(_r.workflow, _r.status, sa.func.count()).group_by(_r.workflow, _r.status)
        return [(r[0], r[1], int(r[2])) for r in self.c.execute(query)]

    def step_rows(self, bounds: Sequence[float]) -> list[dict[str, Any]]:
        """Per workflow, step and status, in one pass over the step rows: ``steps``, how many step
        rows (not foreach items); and how long each row's latest delivery waited from due (queued,
        or its retry's due time) to running, as ``queued`` (count), ``queued_sum`` and cumulative
        ``le_<i>`` bucket counts."""
        due = sa.case((_s.not_before > _s.queued_at, _s.not_before), else_=_s.queued_at)
        waited = sa.and_(_s.queued_at.is_not(None), _s.started_at.is_not(None), _s.started_at >= due)
        value = sa.case((waited, seconds_between(self.dialect, due, _s.started_at)))
        query = (
            sa.select(
                _r.workflow,
                _s.step,
                _s.status,
                sa.func.sum(sa.case((_s.item_index == STEP_ROW, 1), else_=0)).label("steps"),
                sa.func.count(value).label("queued"),
                sa.func.sum(value).label("queued_sum"),
                *bucket_counts(value, bounds),
            )
            .select_from(t.step_runs.join(t.runs, _r.id == _s.run_id))
            .group_by(_r.workflow, _s.step, _s.status)
        )
        return [dict(r._mapping) for r in self.c.execute(query)]

    def attempt_histogram(self, bounds: Sequence[float]) -> list[dict[str, Any]]:
        """Per workflow and step: attempt durations as cumulative bucket counts, their count and sum."""
        value = seconds_between(self.dialect, _a.started_at, _a.finished_at)
        query = (
            sa.select(
                _r.workflow,
                _s.step,
                sa.func.count().label("count"),
                sa.func.sum(value).label("sum"),
                *bucket_counts(value, bounds),
            )
            .select_from(t.attempts.join(t.step_runs, _s.id == _a.step_run_id).join(t.runs, _r.id == _s.run_id))
            .where(_a.finished_at.is_not(None))
            .group_by(_r.workflow, _s.step)
        )
        return [dict(r._mapping) for r in self.c.execute(query)]

    def dead_letters_open(self) -> int:
        query = sa.select(sa.func.count()).select_from(t.dead_letters).where(t.dead_letters.c.status == "open")
        return int(self.c.execute(query).scalar_one())

    def approvals_waiting(self) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(t.step_runs)
            .where(_s.status == "waiting", _s.wait_kind == "approval")
        )
        return int(self.c.execute(query).scalar_one())
