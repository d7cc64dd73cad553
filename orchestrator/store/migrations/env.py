"""Alembic environment: runs migrations on the connection or URL the caller configured."""

from __future__ import annotations

from typing import Any

from alembic import context

from orchestrator.store.database import create_engine
from orchestrator.store.tables import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        _migrate(connection)


def _migrate(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
