"""What the model-based test (tests/model.py) found, kept as plain regression tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import Repository
from orchestrator.store.migrate import upgrade
from tests.model import state_machine


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Any]:
    def fresh() -> Repository:
        url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
        upgrade(url)
        return Repository.from_url(url)

    instance = state_machine(fresh)()
    yield instance


def steps(**definitions: Any) -> dict[str, Any]:
    return {"name": "model", "steps": definitions}


BROKEN = {"task": "model:work", "with": {"value": "${{ inputs.missing.key }}"}}
FAN = {"task": "model:work", "foreach": "${{ inputs.items }}", "with": {"value": "${{ item }}"}}


def test_an_all_done_foreach_runs_its_items_in_a_failing_run(machine: Any) -> None:
    # Found: the items of an all_done foreach after a failed step were never dispatched
    definition = steps(s0=BROKEN, s1={**FAN, "needs": ["s0"], "trigger": "all_done"})
    machine.submit_first(definition=definition, countdown=0.0, items=[0], flag=False)
    machine.runs_are_consistent()
    machine.teardown()


def pick(machine: Any, step: str) -> int:
    """The position in the broker of the message for ``step``'s own row."""
    with machine.repo.transaction() as tx:
        rows = {r.id: r for run_id in machine.runs for r in tx.steps(run_id).values()}
    return next(
        i for i, m in enumerate(machine.broker.messages) if m.step_run_id in rows and rows[m.step_run_id].step == step
    )


def test_fail_fast_does_not_count_a_joins_failed_need_twice(machine: Any) -> None:
    # Found: fail-fast recounted an all_done join's open needs, then the failed need counted itself
    # down again: the join believed it waited on nothing while a need was still running
    join = {"task": "model:work", "needs": ["n1", "n2"], "trigger": "all_done"}
    definition = steps(n1={"task": "model:work"}, n2={"task": "model:work"}, k=join)
    machine.submit_first(definition=definition, countdown=0.0, items=[], flag=False)
    machine.deliver(pick=pick(machine, "n2"), outcome="die")  # n2 is running
    machine.deliver(pick=pick(machine, "n1"), outcome="fatal")  # n1 fails the run
    machine.runs_are_consistent()
    machine.teardown()
