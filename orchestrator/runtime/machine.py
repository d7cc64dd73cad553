"""Advancing a state machine run: one state at a time, each visit its own step row.

When a visit succeeds (and its gate, if any, is met), the first of its routes whose ``if`` holds
chooses the next state, and a new row for that visit is made in the same transaction, so a crash
can never leave a run between two states. An end state ends the run; more transitions than
``max_transitions`` fail it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.definition.machine import MachinePlan, state_of, visit_name
from orchestrator.definition.model import EndStatus
from orchestrator.errors import EvaluationError, GateNotMet
from orchestrator.runtime.scheduler import Advancer, Dispatch
from orchestrator.runtime.secrets import REFERENCES
from orchestrator.settings import get_settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import StepRow

_MOVES_ON = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})
TRANSITION = "state.transition"


class MachineAdvancer(Advancer):
    """The scheduler for a workflow of ``states``; ``rows`` holds each state's latest visit."""

    @property
    def machine(self) -> MachinePlan:
        assert self.plan.machine is not None
        return self.plan.machine

    def start(self) -> list[Dispatch]:
        if self.run.status is RunStatus.PENDING:
            self.run.status = RunStatus.RUNNING
            self.tx.update_run(self.run.id, status=RunStatus.RUNNING, started_at=self.at)
            self.event("run.started")
        visits = self.tx.visits(self.run.id)
        for row in visits:
            self.rows[state_of(row.step)] = row
        self.maybe_done = True
        if visits and visits[-1].status is StepStatus.PENDING:
            self.worklist.append(state_of(visits[-1].step))
        elif visits and visits[-1].status in _MOVES_ON and not self.failing:
            self.settled(visits[-1])  # a person skipped or accepted it: the machine moves on
        return self.drain()

    def step_finished(self, row: StepRow) -> list[Dispatch]:
        self.rows[state_of(row.step)] = row
        self.settled(row)
        return self.drain()

    def woken(self, row: StepRow) -> list[Dispatch]:
        self.rows[state_of(row.step)] = row
        return super().woken(row)

    def load(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.rows]
        if missing:
            for row in self.tx.visits(self.run.id):
                if state_of(row.step) in missing:
                    self.rows[state_of(row.step)] = row

    def context_for(self, refs: Iterable[str]) -> dict[str, Any]:
        """``steps.<state>`` is the state's latest visit that ended (a state reads its own previous
        output when it loops); a state not visited yet reads as pending, with no output."""
        wanted = set(refs)
        ended: dict[str, StepRow] = {}
        if wanted:
            for row in self.tx.visits(self.run.id):
                if row.status.terminal and state_of(row.step) in wanted:
                    ended[state_of(row.step)] = row
        steps = {s: {"output": None, "status": "pending"} for s in wanted}
        steps.update({s: {"output": r.output, "status": str(r.status)} for s, r in ended.items()})
        return {"inputs": self.run.inputs, "steps": steps, "secrets": REFERENCES}

    def complete(self, row: StepRow, output: Any, how: str) -> None:
        """A waiting state's work succeeded: its gate decides whether it is done."""
        unmet = gate_problem(self, state_of(row.step), output)
        if unmet is not None:
            self.fail_waiting(row, GateNotMet(unmet))
            return
        super().complete(row, output, how)

    def settled(self, row: StepRow) -> None:
        state = state_of(row.step)
        self.rows[state] = row
        self.maybe_done = True
        if row.status not in _MOVES_ON or self.failing:
            return
        if state in self.machine.ends:
            self.reach_end(state)
            return
        self.move(row, state)

    def move(self, row: StepRow, state: str) -> None:
        """Choose the next state and make its visit's row; start it unless the run is paused."""
        context = {**self.context_for(_route_refs(self)), "output": row.output}
        routes = self.machine.routes[state]
        try:
            route = next((r for r in routes if r.condition is None or r.condition.render(context)), None)
        except EvaluationError as exc:
            self.fail_run(f"{row.step}: transitions: {exc.message}")
            return
        if route is None:
            self.fail_run(f"{row.step}: NoTransition: no transition of state '{state}' applies")
            return
        made = len(self.tx.visits(self.run.id))
        if made > self.machine.max_transitions:
            self.fail_run(f"NoTransition: the run passed max_transitions ({self.machine.max_transitions})")
            return
        count = sum(1 for r in self.tx.visits(self.run.id) if state_of(r.step) == route.to)
        visit = self.tx.insert_visit(self.run.id, visit_name(route.to, count + 1))
        self.rows[route.to] = visit
        self.event(TRANSITION, visit, {"from": row.step, "to": visit.step, "reason": route.text})
        if self.plan.steps[route.to].kind == "end":
            self.settle(visit, StepStatus.SUCCEEDED)
        else:
            self.worklist.append(route.to)

    def reach_end(self, state: str) -> None:
        if self.machine.ends[state] is EndStatus.FAILED:
            self.fail_run(f"{self.rows[state].step}: reached end state '{state}' (end: failed)")

    def consider(self, step_id: str) -> None:
        if self.plan.steps[step_id].kind == "end":  # an end state visited first does no work
            row = self.rows[step_id]
            if row.status is StepStatus.PENDING:
                self.settle(row, StepStatus.SUCCEEDED)
            return
        super().consider(step_id)


def _route_refs(advancer: MachineAdvancer) -> set[str]:
    """Every state a route reads (``steps.<state>``), loaded: transitions see the latest visits."""
    found: set[str] = set()
    for routes in advancer.machine.routes.values():
        for route in routes:
            if route.condition is not None:
                found |= route.condition.refs.steps
    advancer.load(found)
    return found


def gate_problem(advancer: Advancer, state: str, output: Any) -> str | None:
    """Why the state's gate is not met (None when it is, or it has none)."""
    machine = advancer.plan.machine
    gate = machine.gates.get(state) if machine is not None else None
    if gate is None or getattr(advancer.kinds, "mocked", False):  # a dry run looks at no file
        return None
    advancer.load(gate.refs.steps)
    return artifacts_missing(gate.render({**advancer.context_for(gate.refs.steps), "output": output}))


def artifacts_missing(paths: Any) -> str | None:
    """The first artifact that is not a file under ``ORCHESTRATOR_ARTIFACT_ROOT``, as a sentence."""
    root = Path(get_settings().artifact_root or ".").resolve()
    for path in paths if isinstance(paths, list) else [paths]:
        if not isinstance(path, str) or not path:
            return f"gate artifact {path!r} is not a path"
        found = (root / path).resolve()
        if not found.is_relative_to(root):
            return f"gate artifact {path} is outside ORCHESTRATOR_ARTIFACT_ROOT ({root})"
        if not found.is_file():
            return f"gate artifact {path} does not exist under {root}"
    return None


__all__ = ["MachineAdvancer", "artifacts_missing", "gate_problem"]
