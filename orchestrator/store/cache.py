"""The step cache's queries (a part of ``Tx``): entries by key, reused until they expire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orchestrator.store import tables as t
from orchestrator.store.rows import aware

_c = t.cache_entries.c


@dataclass(frozen=True)
class CacheEntry:
    key: str
    workflow: str
    step: str
    task: str
    output: Any
    run_id: str | None
    created_at: datetime
    expires_at: datetime | None
    hits: int
    last_hit_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> CacheEntry:
        data = dict(row._mapping)
        data.pop("step_run_id", None)
        for key in ("created_at", "expires_at", "last_hit_at"):
            data[key] = aware(data[key])
        return cls(**data)

    def view(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "workflow": self.workflow,
            "step": self.step,
            "task": self.task,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "hits": self.hits,
            "last_hit_at": None if self.last_hit_at is None else self.last_hit_at.isoformat(),
        }


def _live(at: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_c.expires_at.is_(None), _c.expires_at > at)


class CacheQueries:
    c: sa.Connection
    dialect: str

    def cache_entry(self, key: str, at: datetime) -> CacheEntry | None:
        """The entry under ``key`` unless it has expired."""
        row = self.c.execute(sa.select(t.cache_entries).where(_c.key == key, _live(at))).first()
        return None if row is None else CacheEntry.from_row(row)

    def keep_in_cache(self, values: dict[str, Any], replace: bool = False) -> None:
        """Keep a success under its key: a live entry already there stays (two workers that missed
        at once both succeeded: the first one's stays) unless ``replace``; an expired one is replaced."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        insert = dialect.insert(t.cache_entries).values(**values)
        new = {k: insert.excluded[k] for k in values if k != "key"} | {"hits": 0, "last_hit_at": None}
        at = values["created_at"]
        expired = sa.and_(_c.expires_at.is_not(None), _c.expires_at <= at)
        self.c.execute(
            insert.on_conflict_do_update(index_elements=[_c.key], set_=new, where=None if replace else expired)
        )

    def purge_expired_cache(self, at: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` entries that expired before ``at``; how many went."""
        doomed = sa.select(_c.key).where(_c.expires_at.is_not(None), _c.expires_at <= at).limit(limit)
        gone = self.c.execute(t.cache_entries.delete().where(_c.key.in_(doomed)).returning(_c.key)).fetchall()
        return len(gone)

    def cache_hit(self, key: str, at: datetime) -> None:
        self.c.execute(t.cache_entries.update().where(_c.key == key).values(hits=_c.hits + 1, last_hit_at=at))

    def cache_entries(
        self, workflow: str | None = None, step: str | None = None, limit: int = 1000
    ) -> list[CacheEntry]:
        query = sa.select(t.cache_entries).order_by(_c.created_at.desc(), _c.key).limit(limit)
        for column, value in ((_c.workflow, workflow), (_c.step, step)):
            if value is not None:
                query = query.where(column == value)
        return [CacheEntry.from_row(r) for r in self.c.execute(query)]

    def clear_cache(self, workflow: str | None = None, step: str | None = None) -> int:
        """Delete entries (of a workflow, of one step); how many went."""
        statement = t.cache_entries.delete()
        for column, value in ((_c.workflow, workflow), (_c.step, step)):
            if value is not None:
                statement = statement.where(column == value)
        deleted = self.c.execute(statement.returning(_c.key)).fetchall()
        return len(deleted)
