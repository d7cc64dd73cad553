"""Step messages stay the same size however long the workflow: nothing rides along with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import signals

from orchestrator.definition import WorkflowBuilder, build_plan
from orchestrator.runtime.connect import open_repository
from orchestrator.settings import get_settings


@pytest.fixture
def embedded_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("ORCHESTRATOR_BROKER_URL", raising=False)
    get_settings.cache_clear()
    from orchestrator.worker import tasks

    tasks._ENGINES.clear()
    yield
    tasks._ENGINES.clear()
    get_settings.cache_clear()


def test_a_100_step_chain_sends_constant_size_messages(embedded_state: None) -> None:
    from orchestrator.cli.runs import follow
    from orchestrator.runtime import operations
    from orchestrator.worker.embedded import EmbeddedWorker
    from orchestrator.worker.tasks import build_engine

    wf = WorkflowBuilder("chain")
    previous = wf.step("s0", "tasks.examples:add", with_={"a": 1, "b": 1})
    for i in range(1, 100):
        previous = wf.step(f"s{i}", "tasks.examples:add", needs=[previous], with_={"a": previous.output, "b": 1})
    plan = build_plan(wf.build())
    sizes: list[int] = []

    def record(sender: str | None = None, body: Any = None, **_: Any) -> None:
        if sender == "orchestrator.execute_step":
            sizes.append(len(json.dumps(body)))

    signals.before_task_publish.connect(record)
    try:
        repo = open_repository()
        with EmbeddedWorker():
            submitted = operations.submit(build_engine(get_settings(), repo), plan, {})
            view = follow(repo, submitted.run_id, quiet=True)
    finally:
        signals.before_task_publish.disconnect(record)
    assert view["status"] == "succeeded"
    assert view["steps"]["s99"]["output"] == 101
    assert len(sizes) == 100
    # Only the step row id's digits vary: the 100th message is as small as the first
    assert max(sizes) - min(sizes) <= 3, (min(sizes), max(sizes))
