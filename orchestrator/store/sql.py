"""Small SQL building blocks shared by the store's query modules."""

from __future__ import annotations

from collections.abc import Sequence
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


def among(column: sa.ColumnElement[Any], values: Sequence[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values)``, for a batch's keys. PostgreSQL: ``column = ANY(:array)``, one parameter
    whatever the number of values, so the statement's text is the same for every batch (a 500-value
    IN list is rendered, and parsed by the driver, anew each time)."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))
