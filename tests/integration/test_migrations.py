"""Schema migrations upgrade an empty database on PostgreSQL and SQLite, and are idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store.database import get_engine
from orchestrator.store.migrate import current, upgrade
from tests.conftest import _admin, _drop, _sqlalchemy_url

TABLES = {
    "alembic_version",
    "attempts",
    "breakers",
    "dead_letters",
    "definitions",
    "events",
    "runs",
    "step_runs",
    "workers",
    "workflows",
}


def check(url: str) -> None:
    upgrade(url)
    upgrade(url)
    engine = get_engine(url)
    assert set(sa.inspect(engine).get_table_names()) == TABLES
    assert current(url) == "0002"
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("runs")}
    assert {"ix_runs_status_created_at", "ix_runs_workflow_created_at"} <= indexes
    engine.dispose()


def test_sqlite_upgrade_from_empty(tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.mark.integration
def test_postgresql_upgrade_from_empty(pg_template: str) -> None:
    name = f"orch_mig_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        check(_sqlalchemy_url(name))
    finally:
        _drop(name)
