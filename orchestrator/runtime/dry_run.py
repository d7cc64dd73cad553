"""Dry runs: the real scheduler over the real plan, with every step answered by a mock.

No step function is called and the configured store is not written: the run lives in a throwaway
SQLite store, and each kind (task, workflow, wait, approval) completes at once with its mock
(default null), so timers and timeouts take no time. What comes out is the path the run took and
its outputs; with the mocks taken from a recorded run, where the path and outputs now differ.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import Plan, StepPlan
from orchestrator.definition.machine import state_of
from orchestrator.errors import UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine, Recorder
from orchestrator.runtime.kinds import Kinds, StepKind
from orchestrator.runtime.views import history_view, run_view
from orchestrator.store import Repository, StepRow
from orchestrator.store.database import dispose_engines
from orchestrator.store.migrate import upgrade

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer

_PATH = ("step.succeeded", "step.skipped", "step.failed", "step.cancelled", "state.transition")


@dataclass
class Mocks:
    """Outputs by step (or state, or a visit such as ``review#2``); a foreach step's list gives
    item i its element i, any other value is every item's output."""

    outputs: dict[str, Any] = field(default_factory=dict)

    def check(self, plan: Plan) -> None:
        for name in self.outputs:
            if name not in plan.steps:
                known = ", ".join(plan.order)
                raise UsageError(f"--mock {name}: the workflow has no step '{name}' (its steps: {known})")

    def output_for(self, row: StepRow) -> Any:
        key = row.step if row.step in self.outputs else state_of(row.step)
        value = self.outputs.get(key)
        if row.is_item and isinstance(value, list):
            return value[row.item_index] if row.item_index < len(value) else None
        return value


class MockedKind(StepKind):
    """A kind whose every step (or item) ends at once with its mock as output."""

    name: ClassVar[str] = "mock"

    def __init__(self, name: str, mocks: Mocks) -> None:
        self.kind_name = name
        self.mocks = mocks

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        advancer.wait(row, inputs, "mock", None)
        advancer.complete(row, self.mocks.output_for(row), "mocked")


class MockedKinds(Kinds):
    mocked = True  # gates look at no file

    def __init__(self, mocks: Mocks) -> None:
        super().__init__([])
        self.by_name = {name: MockedKind(name, mocks) for name in ("task", "workflow", "wait", "approval")}


@dataclass
class DryRun:
    view: dict[str, Any]
    path: list[dict[str, Any]]
    differences: list[dict[str, Any]] | None = None

    def as_json(self) -> dict[str, Any]:
        found = {"dry_run": True, **self.view, "path": self.path}
        if self.differences is not None:
            found["differences"] = self.differences
        return found


def dry_run(plan: Plan, inputs: dict[str, Any], mocks: Mocks, recorded: dict[str, Any] | None = None) -> DryRun:
    """Run ``plan`` with ``mocks`` in a throwaway store; compare with ``recorded`` (a run's view)."""
    mocks.check(plan)
    operations.check_inputs(plan.workflow, inputs)
    with tempfile.TemporaryDirectory(prefix="orchestrator-dry-run-") as folder:
        url = f"sqlite:///{Path(folder) / 'dry-run.db'}"
        upgrade(url)
        repo = Repository.from_url(url)
        try:
            engine = Engine.create(repo, Recorder(), _no_function, renew_leases=False)
            engine.kinds = MockedKinds(mocks)
            run_id = operations.submit(engine, plan, inputs).run_id
            view = run_view(repo, run_id)
            path = [_step_of(e) for e in history_view(repo, run_id) if e["kind"] in _PATH]
        finally:
            dispose_engines(url)
    for key in ("run_id", "created_at", "started_at", "finished_at", "dead_letters"):
        view.pop(key, None)
    done = DryRun(view, path)
    if recorded is not None:
        done.differences = differences(recorded, view)
    return done


def mocks_from(view: dict[str, Any]) -> Mocks:
    """Every step's recorded output, as the mocks of a dry run."""
    return Mocks({name: step["output"] for name, step in view["steps"].items() if "output" in step})


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the dry run's steps (status, output) and outputs differ from the recorded run's."""
    found = []
    for name in list(dict.fromkeys([*recorded["steps"], *now["steps"]])):
        before, after = recorded["steps"].get(name), now["steps"].get(name)
        was = None if before is None else {"status": before["status"], "output": before.get("output")}
        is_ = None if after is None else {"status": after["status"], "output": after.get("output")}
        if was != is_:
            found.append({"step": name, "recorded": was, "now": is_})
    if recorded.get("outputs") != now.get("outputs"):
        found.append({"outputs": True, "recorded": recorded.get("outputs"), "now": now.get("outputs")})
    return found


def _step_of(event: dict[str, Any]) -> dict[str, Any]:
    detail = event["detail"] if isinstance(event["detail"], dict) else {}
    if event["kind"] == "state.transition":
        return {"transition": {"from": detail.get("from"), "to": detail.get("to"), "reason": detail.get("reason")}}
    found: dict[str, Any] = {"step": event["step"], "status": event["kind"].removeprefix("step.")}
    if event["item_index"] is not None:
        found["item"] = event["item_index"]
    if detail.get("reason") or detail.get("error"):
        found["why"] = detail.get("reason") or detail.get("error")
    return found


def _no_function(name: str) -> Any:
    raise UsageError(f"a dry run calls no step function (asked for {name})")
