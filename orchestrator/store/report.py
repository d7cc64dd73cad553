"""The queries behind ``orchestrator report``: aggregates over runs, step rows, attempts and the
event log, one row per workflow or per step, computed in the database.

Every query starts from the runs created since a time (``ix_runs_created_at_id`` or
``ix_runs_workflow_created_at``) and reaches their step rows, attempts and events through the
indexes keyed by run id or step row id, so a report over a week reads that week's rows only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import STEP_ROW
from orchestrator.store.stats import percentiles, seconds_between, time_bucket

_r, _s, _a, _e = t.runs.c, t.step_runs.c, t.attempts.c, t.events.c
_ENDED_RUN = ("succeeded", "failed", "cancelled")
_ACTIVE_RUN = ("pending", "running", "paused")


class ReportQueries:
    c: sa.Connection
    dialect: str

    def _runs_in(self, since: datetime, workflow: str | None) -> sa.Subquery:
        query = sa.select(
            _r.id, _r.workflow, _r.status, _r.version, _r.created_at, _r.started_at, _r.finished_at
        ).where(_r.created_at >= since)
        if workflow is not None:
            query = query.where(_r.workflow == workflow)
        return query.subquery("chosen")

    def _rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        return [dict(row._mapping) for row in self.c.execute(query)]

    def report_runs(self, since: datetime, workflow: str | None) -> list[dict[str, Any]]:
        """Per workflow: runs by outcome, and p50/p95 of ended runs' durations."""
        runs = self._runs_in(since, workflow)
        counts = sa.select(
            runs.c.workflow,
            sa.func.count().label("runs"),
            *(sa.func.sum(sa.case((runs.c.status == s, 1), else_=0)).label(s) for s in _ENDED_RUN),
            sa.func.sum(sa.case((runs.c.status.in_(_ACTIVE_RUN), 1), else_=0)).label("active"),
        ).group_by(runs.c.workflow)
        found = {row["workflow"]: row for row in self._rows(counts)}
        durations = sa.select(
            runs.c.workflow, seconds_between(self.dialect, runs.c.started_at, runs.c.finished_at).label("value")
        ).where(runs.c.status.in_(_ENDED_RUN), runs.c.started_at.is_not(None), runs.c.finished_at.is_not(None))
        spread = {
            row["workflow"]: row for row in self._rows(percentiles(self.dialect, durations.subquery(), ["workflow"]))
        }
        return [
            {**row, "p50": spread.get(name, {}).get("p50"), "p95": spread.get(name, {}).get("p95")}
            for name, row in sorted(found.items())
        ]

    def report_attempts(self, since: datetime, workflow: str | None) -> list[dict[str, Any]]:
        """Per workflow and step: how many attempts ran, and p50/p95 of their durations."""
        runs = self._runs_in(since, workflow)
        durations = (
            sa.select(
                runs.c.workflow,
                _s.step,
                seconds_between(self.dialect, _a.started_at, _a.finished_at).label("value"),
            )
            .select_from(runs.join(t.step_runs, _s.run_id == runs.c.id).join(t.attempts, _a.step_run_id == _s.id))
            .where(_a.finished_at.is_not(None))
        )
        return self._rows(percentiles(self.dialect, durations.subquery(), ["workflow", "step"]))

    def report_outcomes(self, since: datetime, workflow: str | None) -> list[dict[str, Any]]:
        """Per workflow and step: runs that have it, its ends (succeeded, failed) and retries (attempts
        beyond the first, over the step and its foreach items)."""
        runs = self._runs_in(since, workflow)
        is_step = _s.item_index == STEP_ROW
        query = (
            sa.select(
                runs.c.workflow,
                _s.step,
                sa.func.sum(sa.case((is_step, 1), else_=0)).label("runs"),
                sa.func.sum(sa.case((sa.and_(is_step, _s.status == "succeeded"), 1), else_=0)).label("succeeded"),
                sa.func.sum(sa.case((sa.and_(is_step, _s.status == "failed"), 1), else_=0)).label("failed"),
                sa.func.sum(sa.case((_s.attempts > 1, _s.attempts - 1), else_=0)).label("retries"),
            )
            .select_from(runs.join(t.step_runs, _s.run_id == runs.c.id))
            .group_by(runs.c.workflow, _s.step)
        )
        return self._rows(query)

    def report_queue_waits(self, since: datetime, workflow: str | None) -> list[dict[str, Any]]:
        """Per workflow and step: p50/p95 of the time from ``step.queued`` to the ``step.running`` that
        follows it in the event log (a retry's backoff is not a queue wait, so it is left out)."""
        runs = self._runs_in(since, workflow)
        partition = [_e.run_id, _e.step, _e.item_index]
        paired = (
            sa.select(
                runs.c.workflow,
                _e.step,
                _e.kind,
                _e.at,
                sa.func.lag(_e.kind).over(partition_by=partition, order_by=_e.id).label("before"),
                sa.func.lag(_e.at).over(partition_by=partition, order_by=_e.id).label("before_at"),
            )
            .select_from(runs.join(t.events, _e.run_id == runs.c.id))
            .where(_e.kind.in_(("step.queued", "step.running")), _e.step.is_not(None))
            .subquery("paired")
        )
        waits = sa.select(
            paired.c.workflow,
            paired.c.step,
            seconds_between(self.dialect, paired.c.before_at, paired.c.at).label("value"),
        ).where(paired.c.kind == "step.running", paired.c.before == "step.queued")
        return self._rows(percentiles(self.dialect, waits.subquery(), ["workflow", "step"]))

    def report_offsets(self, since: datetime, workflow: str | None) -> list[dict[str, Any]]:
        """Per workflow and step of succeeded runs: p50 of when the step ended, in seconds after its run
        started; the typical run's timeline, from which the critical path is read."""
        runs = self._runs_in(since, workflow)
        ends = (
            sa.select(
                runs.c.workflow,
                _s.step,
                seconds_between(self.dialect, runs.c.started_at, _s.finished_at).label("value"),
            )
            .select_from(runs.join(t.step_runs, _s.run_id == runs.c.id))
            .where(
                runs.c.status == "succeeded",
                _s.item_index == STEP_ROW,
                _s.status == "succeeded",
                _s.finished_at.is_not(None),
                runs.c.started_at.is_not(None),
            )
        )
        return self._rows(percentiles(self.dialect, ends.subquery(), ["workflow", "step"], fractions=(0.5,)))

    def report_timeline(self, since: datetime, workflow: str | None, hourly: bool) -> list[dict[str, Any]]:
        """Per workflow and day (or hour): ended runs and p50/p95 of their durations."""
        runs = self._runs_in(since, workflow)
        durations = sa.select(
            runs.c.workflow,
            time_bucket(self.dialect, runs.c.started_at, hourly).label("bucket"),
            seconds_between(self.dialect, runs.c.started_at, runs.c.finished_at).label("value"),
        ).where(runs.c.status.in_(_ENDED_RUN), runs.c.started_at.is_not(None), runs.c.finished_at.is_not(None))
        query = percentiles(self.dialect, durations.subquery(), ["workflow", "bucket"])
        return sorted(self._rows(query), key=lambda row: (row["workflow"], row["bucket"]))

    def report_versions(self, since: datetime, workflow: str | None) -> dict[str, str]:
        """Per workflow: the version of its newest run in the window (whose ``needs`` the critical
        path follows); one row per workflow and version comes back."""
        runs = self._runs_in(since, workflow)
        latest = sa.func.max(runs.c.created_at)
        query = (
            sa.select(runs.c.workflow, runs.c.version, latest.label("latest"))
            .group_by(runs.c.workflow, runs.c.version)
            .order_by(runs.c.workflow, latest.desc())
        )
        found: dict[str, str] = {}
        for name, version, _ in self.c.execute(query):
            found.setdefault(name, version)
        return found
