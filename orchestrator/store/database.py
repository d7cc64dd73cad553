"""Engines for PostgreSQL (psycopg 3) and SQLite, with one transaction discipline for both.

SQLite transactions start with ``BEGIN IMMEDIATE`` so that two processes advancing one run
serialise on the write lock instead of failing to upgrade a read lock; PostgreSQL locks the run
row with ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from orchestrator.errors import StoreUnreachable, UsageError
from orchestrator.urls import check_url, redact_url, scrub

_ENGINES: dict[tuple[int, str, bool], Engine] = {}


def redact(url: str | URL) -> str:
    """The URL with its password and query hidden, for messages (see ``orchestrator.urls``)."""
    return redact_url(url.render_as_string(hide_password=False) if isinstance(url, URL) else url)


def _forget_inherited_pools() -> None:
    """In a forked child, drop the parent's pooled connections without closing them (closing
    would end the parent's sessions on the server); the child opens its own."""
    for (pid, _, _), engine in list(_ENGINES.items()):
        if pid != os.getpid():
            engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_pools)


def get_engine(url: str, autocommit: bool = False) -> Engine:
    """One engine per process, URL and mode (engines must not cross a fork).

    The autocommit engine has its own pool, so a one-statement transition costs one round trip
    and no connection ever switches modes. On PostgreSQL its commits are asynchronous.
    """
    key = (os.getpid(), url, autocommit)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = create_engine(url, autocommit)
    return engine


def dispose_engines(url: str | None = None) -> None:
    """Close this process's pooled connections (to ``url``, or all), e.g. before dropping a database."""
    for (pid, engine_url, _), engine in list(_ENGINES.items()):
        if pid == os.getpid() and url in (None, engine_url):
            engine.dispose()


def create_engine(url: str, autocommit: bool = False) -> Engine:
    check_url("ORCHESTRATOR_DATABASE_URL", url, "postgresql+psycopg://user@host/db")
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # a port that is not a number is a ValueError
        raise UsageError(f"ORCHESTRATOR_DATABASE_URL is not a database URL: {redact(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # No pre-ping: it costs a round trip per transaction. A connection the server dropped fails
    # once; SQLAlchemy then invalidates the pool and the caller's retry gets a fresh one.
    options: dict[str, Any] = {"pool_size": 5, "max_overflow": 10, "pool_recycle": 3600}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    if parsed.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": 5}
        startup = []
        if autocommit:  # see Repository.statements: its commits need not wait for the disk
            startup.append("-c synchronous_commit=off")
        if _live_notify():  # the trigger of migration 0011 NOTIFYs only for such connections
            startup.append("-c orchestrator.live_notify=on")
        if startup:
            options["connect_args"]["options"] = " ".join(startup)
    return sa.create_engine(parsed, **options)


def _live_notify() -> bool:
    from orchestrator.settings import get_settings

    return get_settings().live_notify


def _sqlite_engine(url: URL) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def check_reachable(engine: Engine) -> None:
    """Raise StoreUnreachable (exit 3) naming the URL, never its password."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        reason = scrub(reason, engine.url.render_as_string(hide_password=False))
        raise StoreUnreachable(f"cannot reach the state store at {redact(engine.url)}: {reason}") from None
