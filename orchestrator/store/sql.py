"""Small SQL building blocks shared by the store's query modules."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert_if_absent(connection: sa.Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same key exists; True when this call inserted it.

    ``INSERT ... ON CONFLICT DO NOTHING``: safe when two processes insert the same row at once,
    where a select-then-insert would fail one of them with an IntegrityError.
    """
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return connection.execute(statement).first() is not None  # psycopg's rowcount here is not reliable
