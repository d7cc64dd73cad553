"""The database's clock, for leases and heartbeats: every worker is judged by one clock.

PostgreSQL's ``now()`` is the server's time, whatever the clocks of the hosts that write. An SQLite
store lives on one machine, so the process's own UTC clock is that machine's clock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orchestrator.store.rows import now


def db_now(dialect: str) -> Any:
    """A SQL expression for the current time on the store's clock."""
    if dialect == "postgresql":
        return sa.func.statement_timestamp()
    return sa.literal(now(), sa.DateTime(timezone=True))


def db_later(dialect: str, seconds: float) -> Any:
    """The store's current time plus ``seconds``."""
    if dialect == "postgresql":
        return sa.func.statement_timestamp() + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(seconds)))
    from datetime import timedelta

    return sa.literal(now() + timedelta(seconds=seconds), sa.DateTime(timezone=True))
