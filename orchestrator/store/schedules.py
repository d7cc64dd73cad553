"""Schedules and their fires: the rows beat reads every few seconds, and the claim that makes each
tick start its run once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.clock import db_now
from orchestrator.store.rows import aware
from orchestrator.store.sql import insert_if_absent

SPEC_KEYS = ("cron", "every_s", "timezone")


@dataclass
class ScheduleRow:
    workflow: str
    name: str
    version: str
    cron: str | None
    every_s: float | None
    timezone: str
    catchup: str
    overlap: str
    paused: bool
    paused_by: str | None
    active_since: datetime
    last_fire_at: datetime | None
    last_run_id: str | None
    pending_fire_at: datetime | None
    warning: str | None
    warning_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> ScheduleRow:
        data = dict(row._mapping)
        for key in ("active_since", "last_fire_at", "pending_fire_at", "warning_at"):
            data[key] = aware(data[key])
        data["paused"] = bool(data["paused"])
        return cls(**data)

    @property
    def full_name(self) -> str:
        return f"{self.workflow}/{self.name}"


class ScheduleQueries:
    """The schedules and schedule_fires tables' queries (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def replace_schedules(self, workflow: str, version: str, specs: Sequence[dict[str, Any]], at: datetime) -> None:
        """``version`` is active: its schedules (name, cron, every_s, timezone, catchup, overlap)
        replace the previous ones. A surviving name keeps its paused flag, last fire and pending
        tick; a changed spec counts from now (``active_since``): it owes nothing from before."""
        s = t.schedules.c
        existing = {r.name: r for r in self.schedules(workflow, lock=True)}
        keep = [spec["name"] for spec in specs]
        self.c.execute(t.schedules.delete().where(s.workflow == workflow, s.name.not_in(keep)))
        for spec in specs:
            old = existing.get(spec["name"])
            values = {**spec, "version": version}
            if old is None:
                self.c.execute(t.schedules.insert().values(workflow=workflow, paused=False, active_since=at, **values))
                continue
            del values["name"]
            if any(getattr(old, key) != spec[key] for key in SPEC_KEYS):
                values["active_since"] = at
            self.update_schedule(workflow, spec["name"], **values)

    def schedules(self, workflow: str | None = None, *, lock: bool = False) -> list[ScheduleRow]:
        s = t.schedules.c
        query = sa.select(t.schedules).order_by(s.workflow, s.name)
        if workflow is not None:
            query = query.where(s.workflow == workflow)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        return [ScheduleRow.from_row(r) for r in self.c.execute(query)]

    def store_time(self) -> datetime:
        """Now on the store's clock: every beat judges ticks by one clock, whatever its host's."""
        value = aware(self.c.execute(sa.select(db_now(self.dialect))).scalar_one())
        assert value is not None
        return value

    def lock_schedule(self, workflow: str, name: str) -> ScheduleRow | None:
        """The schedule, locked until the transaction ends (SQLite: the database write lock), so
        two beats deciding on one schedule take turns."""
        s = t.schedules.c
        query = sa.select(t.schedules).where(s.workflow == workflow, s.name == name)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.c.execute(query).first()
        return None if row is None else ScheduleRow.from_row(row)

    def update_schedule(self, workflow: str, name: str, **values: Any) -> None:
        s = t.schedules.c
        self.c.execute(t.schedules.update().where(s.workflow == workflow, s.name == name).values(**values))

    def claim_fire(
        self, workflow: str, name: str, fire_at: datetime, kind: str, outcome: str, at: datetime, **more: Any
    ) -> bool:
        """Record the tick at ``fire_at``; False when it was recorded before (another beat, an
        earlier look): then nothing is to be done for it."""
        values = {"workflow": workflow, "name": name, "fire_at": fire_at, "kind": kind, "outcome": outcome, "at": at}
        return insert_if_absent(self.c, t.schedule_fires, {**values, **more})

    def update_fire(self, workflow: str, name: str, fire_at: datetime, **values: Any) -> None:
        f = t.schedule_fires.c
        where = (f.workflow == workflow, f.name == name, f.fire_at == fire_at)
        self.c.execute(t.schedule_fires.update().where(*where).values(**values))

    def prune_fires(self, workflow: str, name: str, before: datetime) -> None:
        """Forget the schedule's ticks before ``before``: beat never looks behind the last fire."""
        f = t.schedule_fires.c
        self.c.execute(t.schedule_fires.delete().where(f.workflow == workflow, f.name == name, f.fire_at < before))

    def fires(self, workflow: str, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The schedule's recorded ticks, newest first."""
        f = t.schedule_fires.c
        query = (
            sa.select(f.fire_at, f.kind, f.outcome, f.run_id, f.detail, f.at)
            .where(f.workflow == workflow, f.name == name)
            .order_by(f.fire_at.desc())
            .limit(limit)
        )
        return [dict(r._mapping, fire_at=aware(r.fire_at), at=aware(r.at)) for r in self.c.execute(query)]
