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


def _run_chain(steps: int) -> tuple[dict[str, Any], list[int]]:
    """A chain of ``steps`` adding steps through the embedded worker: its view, and the size of
    every step message published."""
    from orchestrator.cli.runs import follow
    from orchestrator.runtime import operations
    from orchestrator.worker.embedded import EmbeddedWorker
    from orchestrator.worker.tasks import build_engine

    wf = WorkflowBuilder("chain")
    previous = wf.step("s0", "orchestrator.examples:add", with_={"a": 1, "b": 1})
    for i in range(1, steps):
        previous = wf.step(f"s{i}", "orchestrator.examples:add", needs=[previous], with_={"a": previous.output, "b": 1})
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
    return view, sizes


def test_a_100_step_chain_sends_constant_size_messages(embedded_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_STEPS", "0")  # every step a message
    get_settings.cache_clear()
    view, sizes = _run_chain(100)
    assert view["status"] == "succeeded"
    assert view["steps"]["s99"]["output"] == 101
    assert len(sizes) == 100
    # Only the step row id's digits vary: the 100th message is as small as the first
    assert max(sizes) - min(sizes) <= 3, (min(sizes), max(sizes))


def test_a_chain_continues_in_process_within_its_budget(embedded_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that finishes a step runs the one it made ready itself, with no message, up to
    ORCHESTRATOR_LOCAL_STEPS steps after the delivered one; then the next goes out as a message."""
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_STEPS", "10")
    get_settings.cache_clear()
    view, sizes = _run_chain(25)
    assert view["status"] == "succeeded"
    assert view["steps"]["s24"]["output"] == 26
    assert len(sizes) == 3  # s0, s11 and s22 were messages; every other step ran where its need ended
    assert all(s["attempts"] == 1 for s in view["steps"].values())
