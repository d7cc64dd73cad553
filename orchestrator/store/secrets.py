"""The secrets table's queries: Fernet tokens by name (encryption happens above the store)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t


class SecretQueries:
    """The secrets table's queries (a part of ``Tx``)."""

    c: sa.Connection

    def secret_token(self, name: str) -> str | None:
        row = self.c.execute(sa.select(t.secrets.c.token).where(t.secrets.c.name == name)).first()
        return None if row is None else str(row[0])

    def put_secret(self, name: str, token: str, at: datetime) -> bool:
        """Store ``token`` under ``name``; True when the name is new."""
        updated = self.c.execute(
            t.secrets.update().where(t.secrets.c.name == name).values(token=token, updated_at=at)
        ).rowcount
        if updated:
            return False
        self.c.execute(t.secrets.insert().values(name=name, token=token, created_at=at, updated_at=at))
        return True

    def delete_secret(self, name: str) -> bool:
        return bool(self.c.execute(t.secrets.delete().where(t.secrets.c.name == name)).rowcount)

    def secret_names(self) -> list[dict[str, Any]]:
        """Names and times, never the tokens."""
        s = t.secrets.c
        query = sa.select(s.name, s.created_at, s.updated_at).order_by(s.name)
        return [dict(r._mapping) for r in self.c.execute(query)]
