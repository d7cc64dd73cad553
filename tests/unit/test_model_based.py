"""The model-based test of the core on SQLite: random workflows, random interleavings of worker,
broker and operator actions, the invariants checked after every rule (see tests/model.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from orchestrator.store import Repository
from orchestrator.store.database import dispose_engines
from orchestrator.store.migrate import upgrade
from tests.model import state_machine


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("model") / "template.db"
    upgrade(f"sqlite:///{path}")
    dispose_engines(f"sqlite:///{path}")
    yield path


def test_the_core_keeps_its_invariants_on_sqlite(template: Path, tmp_path: Path) -> None:
    def fresh() -> Repository:
        path = tmp_path / f"{uuid.uuid4().hex}.db"
        shutil.copy(template, path)
        return Repository.from_url(f"sqlite:///{path}")

    machine = state_machine(fresh)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("ORCHESTRATOR_MODEL_EXAMPLES", "40")),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
