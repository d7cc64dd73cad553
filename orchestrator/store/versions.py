"""Queries about registered workflows: their versions, who registered them, and which one is active.

The active version of a name is the version of its newest ``activations`` row. Everything that
changes it first takes ``lock_workflow``, so two processes activating at once are serialised and
the newest row is always the last committed one.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import aware, now
from orchestrator.store.sql import insert_if_absent

_w = t.workflows.c
_a = t.activations.c
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")
_HEX = re.compile(r"[0-9a-f]{1,64}")


class VersionQueries:
    c: sa.Connection
    dialect: str

    def lock_workflow(self, name: str) -> None:
        """Serialise, until this transaction ends, everything that changes an active version (SQLite:
        every transaction holds the database write lock already). One lock for every workflow, not
        one per name: whether a version may become active depends on the active versions of the
        workflows it calls, so two workflows calling each other must not be activated at once.
        Activations are rare; the lock costs them nothing that matters."""
        if self.dialect == "postgresql":
            self.c.execute(_LOCK, {"name": "orchestrator.activations"})

    def register(self, name: str, version: str, by: str | None = None) -> bool:
        """Register ``version`` under ``name``; False when it already was."""
        values = {"name": name, "version": version, "registered_at": now(), "registered_by": by}
        return insert_if_absent(self.c, t.workflows, values)

    def active_version(self, name: str) -> str | None:
        """The version runs of ``name`` start on (by name, a schedule, a chain, the submit task)."""
        query = sa.select(_a.version).where(_a.name == name).order_by(_a.id.desc()).limit(1)
        row = self.c.execute(query).first()
        return None if row is None else row[0]

    def activate(self, name: str, version: str, action: str, by: str | None, reason: str | None) -> datetime:
        """``version`` is now ``name``'s active one (the caller holds ``lock_workflow``)."""
        at = now()
        values = {"name": name, "version": version, "action": action, "at": at, "by": by, "reason": reason}
        self.c.execute(t.activations.insert().values(**values))
        return at

    def activations(self, name: str) -> list[dict[str, Any]]:
        """Every activation of ``name``, oldest first."""
        query = sa.select(_a.version, _a.action, _a.at, _a.by, _a.reason).where(_a.name == name).order_by(_a.id)
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]

    def versions_like(self, name: str, prefix: str) -> list[str]:
        """The registered versions of ``name`` that start with ``prefix`` (a hex content hash)."""
        if not _HEX.fullmatch(prefix):
            return []
        query = sa.select(_w.version).where(_w.name == name, _w.version.startswith(prefix, autoescape=True))
        return sorted(r[0] for r in self.c.execute(query))

    def registrations(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registered versions, by name, newest first."""
        query = sa.select(_w.name, _w.version, _w.registered_at, _w.registered_by).order_by(
            _w.name, _w.registered_at.desc(), _w.id.desc()
        )
        if name is not None:
            query = query.where(_w.name == name)
        return [dict(r._mapping, registered_at=aware(r.registered_at)) for r in self.c.execute(query)]

    def active_versions(self) -> dict[str, str]:
        """Every registered name's active version."""
        newest = sa.select(_a.name, sa.func.max(_a.id).label("id")).group_by(_a.name).subquery()
        query = sa.select(_a.name, _a.version).join(newest, newest.c.id == _a.id)
        return {r[0]: r[1] for r in self.c.execute(query)}

    def run_counts(self, name: str) -> dict[str, int]:
        """How many runs of ``name`` each version has."""
        r = t.runs.c
        query = sa.select(r.version, sa.func.count()).where(r.workflow == name).group_by(r.version)
        return {row[0]: int(row[1]) for row in self.c.execute(query)}
