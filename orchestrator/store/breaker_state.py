"""Circuit breakers' shared state in the database, used when no Redis holds it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store import tables as t
from orchestrator.store.rows import aware, now
from orchestrator.store.sql import insert_if_absent


class BreakerStateQueries:
    """The breakers table's queries (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str

    def breaker(self, name: str) -> dict[str, Any]:
        b = t.breakers.c
        row = self.c.execute(sa.select(t.breakers).where(b.name == name)).first()
        if row is None:
            return {
                "name": name,
                "state": "closed",
                "failures": 0,
                "opened_at": None,
                "next_trial_at": None,
                "trial_until": None,
            }
        data = dict(row._mapping)
        for key in ("opened_at", "next_trial_at", "trial_until"):
            data[key] = aware(data[key])
        return data

    def update_breaker(self, name: str, **values: Any) -> None:
        b = t.breakers.c
        insert_if_absent(self.c, t.breakers, {"name": name, "state": "closed", "failures": 0})
        self.c.execute(t.breakers.update().where(b.name == name).values(**values))

    def add_breaker_failure(self, name: str) -> None:
        b = t.breakers.c
        insert_if_absent(self.c, t.breakers, {"name": name, "state": "closed", "failures": 0})
        self.c.execute(t.breakers.update().where(b.name == name).values(failures=b.failures + 1))

    def take_breaker_trial(self, name: str, until: datetime) -> bool:
        """Claim the one half-open trial: true for exactly one caller until ``until`` passes."""
        b = t.breakers.c
        free = sa.or_(b.trial_until.is_(None), b.trial_until < now())
        result = self.c.execute(t.breakers.update().where(b.name == name, free).values(trial_until=until))
        return result.rowcount == 1

    def breaker_names(self) -> list[str]:
        return [r[0] for r in self.c.execute(sa.select(t.breakers.c.name).order_by(t.breakers.c.name))]
