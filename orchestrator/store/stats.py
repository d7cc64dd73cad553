"""Statistics in SQL that work the same on PostgreSQL and SQLite: durations between two timestamps,
percentiles, histogram buckets and time buckets.

SQLite has no ``percentile_cont``, so a percentile is computed the portable way: rank the values
of each group with window functions (``row_number`` and ``count``), then pick the two ranks that
bracket the wanted position and interpolate linearly between them, exactly as ``percentile_cont``
does. Only one row per group comes back to Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

PERCENTILES = (0.5, 0.95)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in seconds, as a float."""
    if dialect == "postgresql":  # date_part is double precision; extract() goes through numeric, 3x slower
        return sa.func.date_part("epoch", end - start, type_=sa.Float)
    # SQLite's date functions keep milliseconds only: whole seconds from strftime('%s') (an exact
    # integer), plus the stored text's fraction of a second (SQLAlchemy writes ".ffffff")
    return sa.type_coerce((_epoch_seconds(end) - _epoch_seconds(start)) + (_fraction(end) - _fraction(start)), sa.Float)


def _epoch_seconds(at: Any) -> ColumnElement[Any]:
    return sa.cast(sa.func.strftime("%s", at), sa.Integer)


def _fraction(at: Any) -> ColumnElement[Any]:
    return sa.cast(sa.func.substr(at, 20), sa.Float)


def _floor(dialect: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    # CAST rounds on PostgreSQL but truncates on SQLite, whose floor() may be compiled out
    return sa.func.floor(value) if dialect == "postgresql" else sa.cast(value, sa.Integer)


def percentiles(
    dialect: str,
    values: sa.Subquery,
    keys: Sequence[str],
    value: str = "value",
    fractions: Sequence[float] = PERCENTILES,
) -> sa.Select[Any]:
    """One row per group of ``keys`` in ``values``: the keys, ``n`` and ``p50``, ``p95``... (named
    after each fraction in percent), interpolated like PostgreSQL's ``percentile_cont``."""
    group = [values.c[k] for k in keys]
    ranked = sa.select(
        *group,
        values.c[value].label("v"),
        sa.func.row_number().over(partition_by=group, order_by=values.c[value]).label("rn"),
        sa.func.count().over(partition_by=group).label("n"),
    ).subquery("ranked")
    columns: list[ColumnElement[Any]] = []
    for fraction in fractions:
        position = (ranked.c.n - 1) * sa.literal(fraction, sa.Float)
        low = _floor(dialect, position)
        high = low + sa.case((position > low, 1), else_=0)
        at_low = sa.func.max(sa.case((ranked.c.rn - 1 == low, ranked.c.v)))
        at_high = sa.func.max(sa.case((ranked.c.rn - 1 == high, ranked.c.v)))
        weight = sa.func.max(position - low)
        columns.append((at_low + weight * (at_high - at_low)).label(f"p{round(fraction * 100)}"))
    ranked_keys = [ranked.c[k] for k in keys]
    return sa.select(*ranked_keys, sa.func.max(ranked.c.n).label("n"), *columns).group_by(*ranked_keys)


def bucket_counts(value: ColumnElement[float], bounds: Sequence[float]) -> list[ColumnElement[int]]:
    """Cumulative histogram counts: how many values are at most each bound (``le`` buckets)."""
    return [sa.func.sum(sa.case((value <= bound, 1), else_=0)).label(f"le_{i}") for i, bound in enumerate(bounds)]


def time_bucket(dialect: str, at: Any, hourly: bool) -> ColumnElement[str]:
    """The UTC day (``2026-12-03``) or hour (``2026-12-03T08:00``) a timestamp falls in, as text."""
    if dialect == "postgresql":
        pattern = 'YYYY-MM-DD"T"HH24:00' if hourly else "YYYY-MM-DD"
        return sa.func.to_char(sa.func.timezone("UTC", at), pattern)
    return sa.func.strftime("%Y-%m-%dT%H:00" if hourly else "%Y-%m-%d", at)
