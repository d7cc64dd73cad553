"""The model-based test of the core (tests/model.py) on PostgreSQL: a shorter profile than the
unit tier's SQLite one, for what only PostgreSQL does (row locks, statement-level RETURNING, jsonb)."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from orchestrator.store import Repository
from orchestrator.store.database import dispose_engines
from tests.conftest import _admin, _drop, _sqlalchemy_url
from tests.model import state_machine

pytestmark = pytest.mark.integration


def test_the_core_keeps_its_invariants_on_postgresql(pg_template: str) -> None:
    created: list[str] = []

    def fresh() -> Repository:
        name = f"orch_model_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        created.append(name)
        return Repository.from_url(_sqlalchemy_url(name))

    try:
        run_state_machine_as_test(
            state_machine(fresh),
            settings=settings(
                max_examples=int(os.environ.get("ORCHESTRATOR_MODEL_EXAMPLES_PG", "12")),
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        for name in created:
            dispose_engines(_sqlalchemy_url(name))
            _drop(name)
