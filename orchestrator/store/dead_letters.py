"""Dead-letter rows: one per step execution that failed for good."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import aware
from orchestrator.store.sql import among


@dataclass
class DeadLetter:
    id: str
    run_id: str
    step_run_id: int
    workflow: str
    step: str
    item_index: int | None
    task: str
    inputs: Any
    error: str
    error_type: str
    traceback: str | None
    attempts: int
    status: str
    failed_at: datetime
    resolved_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> DeadLetter:
        data = dict(row._mapping)
        data["failed_at"] = aware(data["failed_at"])
        data["resolved_at"] = aware(data["resolved_at"])
        return cls(**data)


class DeadLetterQueries:
    """The dead-letter table's queries (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def insert_dead_letter(self, entry: dict[str, Any]) -> None:
        self.c.execute(t.dead_letters.insert().values(**entry))

    def dead_letter(self, entry_id: str, lock: bool = False) -> DeadLetter | None:
        query = sa.select(t.dead_letters).where(t.dead_letters.c.id == entry_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.c.execute(query).first()
        return None if row is None else DeadLetter.from_row(row)

    def dead_letters(
        self,
        status: str | None = None,
        workflow: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
        lock_open: bool = False,
        exclude: Sequence[str] = (),
    ) -> list[DeadLetter]:
        d = t.dead_letters.c
        query = sa.select(t.dead_letters).order_by(d.failed_at.desc(), d.id)
        for column, value in ((d.status, status), (d.workflow, workflow), (d.run_id, run_id)):
            if value is not None:
                query = query.where(column == value)
        if exclude:
            query = query.where(d.id.not_in(list(exclude)))
        if limit is not None:
            query = query.limit(limit)
        if lock_open and self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [DeadLetter.from_row(r) for r in self.c.execute(query)]

    def resolve_dead_letter(self, entry_id: str, status: str, at: datetime) -> bool:
        """Move an open entry to ``status``; False when it was not open any more."""
        d = t.dead_letters.c
        result = self.c.execute(
            t.dead_letters.update().where(d.id == entry_id, d.status == "open").values(status=status, resolved_at=at)
        )
        return result.rowcount == 1

    def resolve_dead_letters(self, entry_ids: Sequence[str], status: str, at: datetime) -> None:
        """Move entries this transaction locked open (``dead_letter(lock=True)``, ``dead_letters(lock_open=True)``)
        to ``status``. By primary key alone: a planner short of statistics (a table just filled)
        would otherwise scan every open entry and test each against every id."""
        d = t.dead_letters.c
        statement = t.dead_letters.update().where(among(d.id, entry_ids, self.dialect))
        self.c.execute(statement.values(status=status, resolved_at=at))

    def resolve_dead_letters_of_run(self, run_id: str, at: datetime) -> int:
        """Every open entry of a run is resolved (a child run whose parent's step took over)."""
        d = t.dead_letters.c
        statement = (
            t.dead_letters.update()
            .where(d.run_id == run_id, d.status == "open")
            .values(status="resolved", resolved_at=at)
        )
        return self.c.execute(statement).rowcount

    def resolve_dead_letters_of(self, run_id: str, steps: Sequence[str], at: datetime) -> int:
        """Open entries of these steps (and their items) of a run are resolved: a person retried,
        skipped or accepted the step."""
        d = t.dead_letters.c
        if not steps:
            return 0
        statement = (
            t.dead_letters.update()
            .where(d.run_id == run_id, d.step.in_(list(steps)), d.status == "open")
            .values(status="resolved", resolved_at=at)
        )
        return self.c.execute(statement).rowcount

    def purge_dead_letters(self, before: datetime, include_open: bool) -> int:
        d = t.dead_letters.c
        condition = d.failed_at < before
        if not include_open:
            condition = sa.and_(condition, d.status != "open")
        return self.c.execute(t.dead_letters.delete().where(condition)).rowcount
