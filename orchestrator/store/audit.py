"""The audit log's queries: append under one lock, read back in chain order or filtered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t

# The transaction-scoped advisory lock every audit append takes on PostgreSQL ("audit" in ASCII).
AUDIT_LOCK = 0x6175646974
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")


class AuditQueries:
    """The audit_log table's queries (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def lock_audit(self) -> None:
        """Serialise appends until this transaction ends, so the chain never forks. SQLite: the
        transaction began with BEGIN IMMEDIATE and already holds the database's write lock.

        A statement of its own, before ``audit_head``: under READ COMMITTED a statement's snapshot
        is taken when it starts, so a head read in the statement that waited for the lock would
        miss the append its previous holder just committed."""
        if self.dialect == "postgresql":
            self.c.execute(_LOCK, {"key": AUDIT_LOCK})

    def audit_head(self) -> tuple[int, str] | None:
        """The newest record's seq and hash (take ``lock_audit`` first to append after it)."""
        a = t.audit_log.c
        row = self.c.execute(sa.select(a.seq, a.hash).order_by(a.seq.desc()).limit(1)).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def append_audit(self, record: dict[str, Any]) -> None:
        self.c.execute(t.audit_log.insert().values(**record))

    def append_audits(self, records: Sequence[dict[str, Any]]) -> None:
        """Several records (already chained, in seq order) in one statement."""
        if records:
            self.c.execute(t.audit_log.insert(), list(records))

    def audit_chain(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Records with a seq above ``after_seq``, in chain order, at most ``limit``."""
        a = t.audit_log.c
        query = sa.select(t.audit_log).where(a.seq > after_seq).order_by(a.seq).limit(limit)
        return [dict(r._mapping) for r in self.c.execute(query)]

    def audit_records(
        self,
        *,
        run_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Records matching every filter given, newest first: ``run_id`` in the target or the
        detail, ``action`` exactly or as a prefix ending in ``*``, ``since`` an ``at`` text."""
        a = t.audit_log.c
        query = sa.select(t.audit_log).order_by(a.seq.desc()).limit(limit)
        if run_id is not None:
            quoted = '%"' + _escape(run_id) + '"%'
            query = query.where(sa.or_(a.target == f"run:{run_id}", a.detail.like(quoted, escape="\\")))
        if actor is not None:
            query = query.where(a.actor == actor)
        if action is not None and action.endswith("*"):
            query = query.where(a.action.like(_escape(action[:-1]) + "%", escape="\\"))
        elif action is not None:
            query = query.where(a.action == action)
        if since is not None:
            query = query.where(a.at >= since)
        if before_seq is not None:
            query = query.where(a.seq < before_seq)
        return [dict(r._mapping) for r in self.c.execute(query)]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
