"""Schema migrations upgrade an empty database on PostgreSQL and SQLite, and are idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orchestrator.store.database import get_engine
from orchestrator.store.migrate import alembic_config, current, upgrade
from orchestrator.store.tables import metadata
from tests.conftest import _admin, _drop, _sqlalchemy_url

TABLES = {
    "activations",
    "audit_log",
    "alembic_version",
    "attempts",
    "breakers",
    "cache_entries",
    "dead_letters",
    "decisions",
    "definitions",
    "events",
    "runs",
    "schedule_fires",
    "schedules",
    "secrets",
    "signal_receipts",
    "signals",
    "step_runs",
    "subscriptions",
    "wait_events",
    "workers",
    "workflows",
}
HEAD = "0012"


def check(url: str) -> None:
    upgrade(url)
    upgrade(url)
    engine = get_engine(url)
    assert set(sa.inspect(engine).get_table_names()) == TABLES
    assert current(url) == HEAD
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("runs")}
    assert {"ix_runs_status_created_at", "ix_runs_workflow_created_at"} <= indexes
    step_indexes = {i["name"] for i in sa.inspect(engine).get_indexes("step_runs")}
    assert {"ix_step_runs_pending_items", "ix_step_runs_active_items", "ix_step_runs_open_steps"} <= step_indexes
    assert {"ix_step_runs_waiting_event", "ix_step_runs_waiting_due"} <= step_indexes
    # The migrations give exactly the schema the code declares
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
    engine.dispose()


def test_a_step_running_under_an_older_worker_gets_a_lapsed_lease(tmp_path: Path) -> None:
    # Given a store at 0002 with a step a worker of the older version is running
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url, "0002")
    engine = get_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO definitions VALUES ('v1', 'wf', '{}', '2026-01-01 00:00:00')")
        c.exec_driver_sql(
            "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
            "VALUES ('r1', 'wf', 'v1', 'running', '{}', '2026-01-01 00:00:00')"
        )
        c.exec_driver_sql(
            "INSERT INTO step_runs (run_id, step, item_index, status, attempts, worker, lost) "
            "VALUES ('r1', 'a', -1, 'running', 1, 'old-host:42', 0)"
        )
    # When the store is upgraded
    upgrade(url)
    # Then the step's lease has already lapsed: the reconciler takes it over
    from orchestrator.store import Repository

    with Repository.from_url(url).transaction() as tx:
        assert [row.step for row in tx.lapsed_leases()] == ["a"]
    engine.dispose()


def test_existing_registrations_end_with_the_latest_one_active(tmp_path: Path) -> None:
    # Given a store at 0005 where v1 then v2 of a workflow were registered (each active in turn)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url, "0005")
    engine = get_engine(url)
    with engine.begin() as c:
        for version, at in (
            ("v1", "2026-01-01 00:00:00"),
            ("v2", "2026-01-02 00:00:00"),
            ("x1", "2026-01-03 00:00:00"),
        ):
            name = "other" if version == "x1" else "wf"
            c.exec_driver_sql(f"INSERT INTO definitions VALUES ('{version}', '{name}', '{{}}', '{at}')")
            c.exec_driver_sql(
                f"INSERT INTO workflows (name, version, registered_at) VALUES ('{name}', '{version}', '{at}')"
            )
    # When the store is upgraded
    upgrade(url)
    # Then the latest registration is active, the one before is what a rollback goes back to
    from orchestrator.runtime.versions import undo_stack
    from orchestrator.store import Repository

    with Repository.from_url(url).transaction() as tx:
        assert tx.active_versions() == {"wf": "v2", "other": "x1"}
        assert undo_stack(tx.activations("wf")) == ["v1", "v2"]
        assert [r["registered_by"] for r in tx.registrations("wf")] == [None, None]
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


def downgrade(url: str, revision: str) -> None:
    with get_engine(url).begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def notify_triggers(url: str) -> list[str]:
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        query = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        return [row[0] for row in connection.exec_driver_sql(query)]


def check_notify_revision(url: str, triggers: list[str]) -> None:
    """0011 adds the event log's notification trigger (PostgreSQL only) and takes it away again."""
    upgrade(url)
    assert notify_triggers(url) == triggers
    downgrade(url, "0010")
    assert current(url) == "0010"
    assert notify_triggers(url) == []
    upgrade(url)
    assert current(url) == HEAD
    assert notify_triggers(url) == triggers
    get_engine(url).dispose()


def test_sqlite_notify_revision_is_a_no_op_both_ways(tmp_path: Path) -> None:
    check_notify_revision(f"sqlite:///{tmp_path / 'state.db'}", [])


@pytest.mark.integration
def test_postgresql_notify_trigger_upgrades_and_downgrades(pg_template: str) -> None:
    name = f"orch_mig_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        check_notify_revision(_sqlalchemy_url(name), ["events_notify"])
    finally:
        _drop(name)


def run_indexes(url: str) -> set[str]:
    return {i["name"] or "" for i in sa.inspect(get_engine(url)).get_indexes("runs")}


def check_keyset_revision(url: str) -> None:
    """0012 replaces runs' index on created_at by one on (created_at, id), and back."""
    upgrade(url)
    assert {"ix_runs_created_at_id"} <= run_indexes(url) and "ix_runs_created_at" not in run_indexes(url)
    downgrade(url, "0011")
    assert current(url) == "0011"
    assert {"ix_runs_created_at"} <= run_indexes(url) and "ix_runs_created_at_id" not in run_indexes(url)
    upgrade(url)
    assert current(url) == "0012"
    assert "ix_runs_created_at_id" in run_indexes(url)
    get_engine(url).dispose()


def test_sqlite_keyset_index_upgrades_and_downgrades(tmp_path: Path) -> None:
    check_keyset_revision(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.mark.integration
def test_postgresql_keyset_index_upgrades_and_downgrades(pg_template: str) -> None:
    name = f"orch_mig_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        check_keyset_revision(_sqlalchemy_url(name))
    finally:
        _drop(name)
