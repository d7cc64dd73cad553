"""Advancing a run: from the state store's truth to the next steps to dispatch.

Everything here happens inside one transaction that holds the run's lock, so advancing is
idempotent and safe when two workers do it at once: the second sees the first's decisions.
The scheduler imports no Celery; it returns ``Dispatch`` values that the worker layer sends
after the transaction commits. Work per completion is proportional to the finished step's
dependents, not to the size of the workflow.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.definition import Plan, StepPlan, Trigger
from orchestrator.errors import EvaluationError
from orchestrator.status import STEP_TERMINAL, RunStatus, StepStatus
from orchestrator.store import STEP_ROW, RunRow, StepRow, Tx, now

_FAILED_LIKE = frozenset({StepStatus.FAILED, StepStatus.CANCELLED})
FAIL_FAST_REASON = "not started: the run failed"


@dataclass(frozen=True)
class Dispatch:
    """One message to send: constant size, whatever the workflow's size."""

    step_run_id: int
    dispatch_id: str
    countdown: float = 0.0
    timeout: float | None = None


def new_dispatch_id() -> str:
    return str(uuid.uuid4())


def trigger_verdict(trigger: Trigger, needs: dict[str, StepStatus]) -> str | None:
    """None when the step should run; otherwise why it is skipped."""
    if trigger is Trigger.ALL_DONE:
        return None
    if trigger is Trigger.ANY_SUCCEEDED:
        failed = sorted(n for n, s in needs.items() if s in _FAILED_LIKE)
        if failed:
            return f"need {failed[0]} {needs[failed[0]]}"
        if any(s is StepStatus.SUCCEEDED for s in needs.values()):
            return None
        return "no need succeeded"
    unmet = sorted(n for n, s in needs.items() if s is not StepStatus.SUCCEEDED)
    return f"need {unmet[0]} {needs[unmet[0]]}" if unmet else None


class Advancer:
    """One transaction's scheduling of one run; the run row is locked by the caller."""

    def __init__(self, tx: Tx, plan: Plan, run: RunRow) -> None:
        self.tx = tx
        self.plan = plan
        self.run = run
        self.at = now()
        self.rows: dict[str, StepRow] = {}
        self.events: list[dict[str, Any]] = []
        self.dispatches: list[Dispatch] = []
        self.queued: list[tuple[int, str]] = []
        self.worklist: deque[str] = deque()
        self.maybe_done = False
        self.failing = run.error is not None

    # Entry points

    def start(self) -> list[Dispatch]:
        """Consider every step: a new run, or a full re-scan (resume, reconcile)."""
        if self.run.status is RunStatus.PENDING:
            self.run.status = RunStatus.RUNNING
            self.tx.update_run(self.run.id, status=RunStatus.RUNNING, started_at=self.at)
            self.event("run.started")
        self.rows.update(self.tx.steps(self.run.id))
        for step_id, row in self.rows.items():
            if row.status is StepStatus.RUNNING and self.plan.steps[step_id].foreach is not None:
                self.refill(self.plan.steps[step_id])
        self.worklist.extend(self.plan.order)
        return self.drain()

    def step_finished(self, row: StepRow) -> list[Dispatch]:
        """``row`` (a step or a foreach item) just reached a terminal state."""
        if row.is_item:
            self.load([row.step])
            self.refill(self.plan.steps[row.step])
        else:
            self.rows[row.step] = row
            self.settled(row)
        return self.drain()

    def step_failed(self, row: StepRow) -> list[Dispatch]:
        """``row`` (already recorded as failed for good) fails the run, fast."""
        label = f"{row.step}[{row.item_index}]" if row.is_item else row.step
        self.fail_run(f"{label}: {row.error}")
        return self.step_finished(row)

    # The loop

    def drain(self) -> list[Dispatch]:
        while self.worklist:
            self.consider(self.worklist.popleft())
        self.tx.queue_many(self.queued, self.at)
        self.queued = []
        if self.maybe_done and not self.run.status.terminal and self.tx.open_steps(self.run.id) == 0:
            self.finish_run()
        self.tx.add_events(self.events)
        self.events = []
        return self.dispatches

    def consider(self, step_id: str) -> None:
        sp = self.plan.steps[step_id]
        self.load([step_id, *sp.needs])
        row = self.rows[step_id]
        if row.status is not StepStatus.PENDING:
            return
        needs = {n: self.rows[n].status for n in sp.needs}
        if not all(s in STEP_TERMINAL for s in needs.values()):
            return
        if self.failing and sp.trigger is not Trigger.ALL_DONE:
            self.settle(row, StepStatus.CANCELLED, reason=FAIL_FAST_REASON)
            return
        verdict = trigger_verdict(sp.trigger, needs)
        if verdict is not None:
            self.settle(row, StepStatus.SKIPPED, reason=verdict)
            return
        self.begin(row, sp)

    def begin(self, row: StepRow, sp: StepPlan) -> None:
        context = self.context(sp)
        try:
            if sp.condition is not None and not sp.condition.render(context):
                self.settle(row, StepStatus.SKIPPED, reason=f"if was false: {_condition_text(sp)}")
                return
            if sp.foreach is None:
                self.queue(row, sp.arguments.render(context))
                return
            items = sp.foreach.render(context)
            if not isinstance(items, list):
                raise EvaluationError(f"foreach gave {type(items).__name__}, not a list")
            inputs = [sp.arguments.render({**context, "item": v, "index": i}) for i, v in enumerate(items)]
        except EvaluationError as exc:
            self.settle(row, StepStatus.FAILED, error=f"EvaluationError: {exc.message}")
            return
        self.expand(row, sp, inputs)

    def expand(self, row: StepRow, sp: StepPlan, inputs: list[Any]) -> None:
        if not inputs:
            self.settle(row, StepStatus.SUCCEEDED, output=[])
            return
        self.tx.insert_items(self.run.id, row.step, inputs)
        self.tx.update_step(row.id, status=StepStatus.RUNNING, started_at=self.at, inputs={"items": len(inputs)})
        row.status = StepStatus.RUNNING
        self.event("step.expanded", row, {"items": len(inputs)})
        self.refill(sp)

    def refill(self, sp: StepPlan) -> None:
        """Keep a foreach step's items flowing under its concurrency; close it when all are done."""
        row = self.rows[sp.id]
        if row.status is not StepStatus.RUNNING:
            return
        counts = self.tx.item_counts(self.run.id, sp.id)
        in_flight = counts.get(StepStatus.QUEUED, 0) + counts.get(StepStatus.RUNNING, 0)
        pending = counts.get(StepStatus.PENDING, 0)
        if pending and not self.failing:
            room = pending if sp.step.concurrency is None else sp.step.concurrency - in_flight
            for item_id, index in self.tx.pending_items(self.run.id, sp.id, room) if room > 0 else ():
                self.dispatch(item_id, sp.timeout)
                self.events.append(self.event_row("step.queued", sp.id, index))
            return
        if in_flight or pending:
            return
        self.close_foreach(row)

    def close_foreach(self, row: StepRow) -> None:
        results = self.tx.item_results(self.run.id, row.step)
        failed = [(i, error) for i, (status, _, error) in enumerate(results) if status is StepStatus.FAILED]
        if failed:
            index, error = failed[0]
            self.settle(row, StepStatus.FAILED, error=f"item {index}: {error}")
        elif any(status is not StepStatus.SUCCEEDED for status, _, _ in results):
            self.settle(row, StepStatus.CANCELLED, reason="items were cancelled")
        else:
            self.settle(row, StepStatus.SUCCEEDED, output=[output for _, output, _ in results])

    # Transitions

    def queue(self, row: StepRow, inputs: Any) -> None:
        dispatch_id = new_dispatch_id()
        self.tx.update_step(row.id, status=StepStatus.QUEUED, inputs=inputs, dispatch_id=dispatch_id, queued_at=self.at)
        row.status = StepStatus.QUEUED
        self.dispatches.append(Dispatch(row.id, dispatch_id, timeout=self.plan.steps[row.step].timeout))
        self.event("step.queued", row)

    def dispatch(self, step_run_id: int, timeout: float | None = None) -> None:
        """Queue a foreach item (its inputs were stored when the step expanded)."""
        dispatch_id = new_dispatch_id()
        self.queued.append((step_run_id, dispatch_id))
        self.dispatches.append(Dispatch(step_run_id, dispatch_id, timeout=timeout))

    def settle(
        self,
        row: StepRow,
        status: StepStatus,
        *,
        output: Any = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A step (not an item) reaches a terminal state here, inside the advance."""
        self.tx.update_step(row.id, status=status, output=output, error=error, reason=reason, finished_at=self.at)
        row.status, row.output, row.error, row.reason = status, output, error, reason
        detail = {k: v for k, v in (("error", error), ("reason", reason)) if v is not None}
        self.event(f"step.{status}", row, detail or None)
        if status is StepStatus.FAILED:
            self.fail_run(f"{row.step}: {error}")
        self.settled(row)

    def settled(self, row: StepRow) -> None:
        dependents = self.plan.steps[row.step].dependents
        self.worklist.extend(dependents)
        if not dependents:
            self.maybe_done = True  # a leaf ended: the run may be over (checked once, in drain)

    def fail_run(self, error: str) -> None:
        """Fail fast: record the first error; nothing new starts but ``all_done`` steps."""
        if self.failing:
            return
        self.failing = True
        self.run.error = error
        self.tx.update_run(self.run.id, error=error)
        self.event("run.failing", detail={"error": error})
        self.maybe_done = True
        keep = [s for s, sp in self.plan.steps.items() if sp.trigger is Trigger.ALL_DONE]
        self.tx.queue_many(self.queued, self.at)
        self.queued = []
        cancelled = self.tx.cancel_open(self.run.id, (StepStatus.PENDING, StepStatus.QUEUED), keep, FAIL_FAST_REASON)
        dropped = {row_id for row_id, _, _ in cancelled}
        self.dispatches = [d for d in self.dispatches if d.step_run_id not in dropped]
        for _, step, index in cancelled:
            if index == STEP_ROW:
                row = self.rows.get(step)
                if row is not None:
                    row.status = StepStatus.CANCELLED
                self.events.append(self.event_row("step.cancelled", step, None, {"reason": "the run failed"}))
                self.worklist.extend(self.plan.steps[step].dependents)
        for step in {s for _, s, i in cancelled if i != STEP_ROW}:
            self.worklist.append(step)
        self.worklist.extend(keep)
        self.rows.update(self.tx.steps(self.run.id))

    def finish_run(self) -> None:
        if self.failing:
            self.close_run(RunStatus.FAILED)
            return
        self.load(self.plan.outputs.refs.steps)
        try:
            outputs = self.plan.outputs.render(self.context_for(self.plan.outputs.refs.steps))
        except EvaluationError as exc:
            self.run.error = f"outputs: {exc.message}"
            self.tx.update_run(self.run.id, error=self.run.error)
            self.close_run(RunStatus.FAILED)
            return
        self.close_run(RunStatus.SUCCEEDED, outputs)

    def close_run(self, status: RunStatus, outputs: Any = None) -> None:
        self.tx.update_run(self.run.id, status=status, outputs=outputs, finished_at=self.at)
        self.run.status = status
        self.event(f"run.{status}", detail={"error": self.run.error} if self.run.error else None)

    # Data

    def load(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.rows]
        if missing:
            self.rows.update(self.tx.steps(self.run.id, missing))

    def context(self, sp: StepPlan) -> dict[str, Any]:
        refs: set[str] = set()
        for template in (sp.condition, sp.foreach, sp.arguments):
            if template is not None:
                refs |= template.refs.steps
        self.load(refs)
        return self.context_for(refs)

    def context_for(self, refs: Iterable[str]) -> dict[str, Any]:
        steps = {s: {"output": self.rows[s].output, "status": str(self.rows[s].status)} for s in refs}
        return {"inputs": self.run.inputs, "steps": steps}

    def event(self, kind: str, row: StepRow | None = None, detail: dict[str, Any] | None = None) -> None:
        step = None if row is None else row.step
        index = None if row is None or not row.is_item else row.item_index
        self.events.append(self.event_row(kind, step, index, detail))

    def event_row(
        self, kind: str, step: str | None, index: int | None, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"run_id": self.run.id, "step": step, "item_index": index, "kind": kind, "detail": detail, "at": self.at}


def _condition_text(sp: StepPlan) -> str:
    condition = sp.step.if_
    return str(condition)[:200]
