"""Advancing a run: from the state store's truth to the next steps to dispatch.

Everything here happens inside one transaction that holds the run's lock, so advancing is
idempotent and safe when two workers do it at once: the second sees the first's decisions.
The scheduler imports no Celery; it returns ``Dispatch`` values that the transport sends after
the transaction commits. Work per completion is bounded by the finished step's dependents (a
join is counted down, not reloaded) and, in a foreach, by its concurrency.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.definition import Plan, StepPlan, Trigger
from orchestrator.definition.model import RetryDecision
from orchestrator.definition.plan import COMPENSATE_PREFIX
from orchestrator.errors import EvaluationError, StepError
from orchestrator.runtime.secrets import REFERENCES
from orchestrator.settings import get_settings
from orchestrator.status import STEP_TERMINAL, RunStatus, StepStatus
from orchestrator.store import STEP_ROW, RunRow, StepRow, Tx, now, storable

if TYPE_CHECKING:
    from orchestrator.runtime.kinds import Kinds

_FAILED_LIKE = frozenset({StepStatus.FAILED, StepStatus.CANCELLED})
FAIL_FAST_REASON = "not started: the run failed"
ITEMS_CANCELLED = "items were cancelled"
RUN_CANCELLED = "the run was cancelled"


@dataclass(frozen=True)
class Label:
    """What monitoring (Flower, the worker's log) shows for a step message: names and numbers,
    never the workflow's data; it rides in the message's headers, never in its body."""

    workflow: str
    step: str
    run_id: str
    item_index: int | None = None
    attempt: int | None = None  # the attempt the message starts, where known


def label_for(plan: Plan, row: StepRow) -> Label:
    """The label of the message that starts ``row``'s next attempt."""
    return Label(plan.workflow.name, row.step, row.run_id, row.item_index if row.is_item else None, row.attempts + 1)


@dataclass(frozen=True)
class Dispatch:
    """One message to send: constant size, whatever the workflow's size. A ``wake`` message runs
    nothing: it wakes a waiting step when its timer or deadline is due (the reconciler does too)."""

    step_run_id: int
    dispatch_id: str
    countdown: float = 0.0
    timeout: float | None = None
    wake: bool = False
    stop_run: str | None = None  # not a message: a child run no step waits for any more, to cancel
    local: bool = False  # a wake the sender may do itself, in-process, once its transaction committed
    label: Label | None = None


def stop(child_run_id: str) -> Dispatch:
    return Dispatch(0, "", stop_run=child_run_id)


class Runtime(Protocol):
    """What a step kind that starts runs needs of the engine: plans, and advancing another run."""

    plans: Any

    def advancer(self, tx: Tx, plan: Plan, run: RunRow) -> Advancer: ...

    def after_run(self, tx: Tx, run: RunRow) -> tuple[list[Dispatch], list[dict[str, Any]]]:
        """A run just ended: the messages of the runs it started, and the events saying so."""
        ...


@dataclass(frozen=True)
class Failure:
    """A step that failed for good: what the dead-letter queue (or any middleware) records."""

    row: StepRow
    plan: Plan
    error: str
    error_type: str
    traceback: str | None
    why: str
    at: datetime


FailureHook = Callable[[Tx, Failure], None]
Keep = Callable[[Tx, Dispatch, Any], bool]  # claims a step about to be queued (with its inputs) for this process
RetryVerdict = Callable[[StepRow, StepPlan, Exception], RetryDecision]


def _no_retry(row: StepRow, sp: StepPlan, error: Exception) -> RetryDecision:
    return RetryDecision(False, 0.0, "no retry policy is applied here")


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

    def __init__(
        self,
        tx: Tx,
        plan: Plan,
        run: RunRow,
        kinds: Kinds,
        on_failure: FailureHook | None = None,
        retry: RetryVerdict = _no_retry,
        wake_limit: float = 0.0,
        runtime: Runtime | None = None,
    ) -> None:
        self.tx = tx
        self.runtime = runtime
        self.retry = retry
        self.wake_limit = wake_limit
        self.plan = plan
        self.run = run
        self.kinds = kinds
        self.on_failure = on_failure
        self.at = now()
        self.rows: dict[str, StepRow] = {}
        self.events: list[dict[str, Any]] = []
        self.dispatches: list[Dispatch] = []
        self.queued: list[tuple[int, str]] = []
        self.to_queue: list[tuple[Dispatch, Any]] = []  # steps queued, their rows not yet written
        self.keep: Keep | None = None
        self.worklist: deque[str] = deque()
        self.to_refill: set[str] = set()
        self.to_recount: set[str] = set()
        self.maybe_done = False
        self.failing = run.error is not None

    # Entry points

    def start(self) -> list[Dispatch]:
        """Consider every step: a new run, or a full re-scan (resume, repair, a stuck run)."""
        if self.run.status is RunStatus.PENDING:
            self.run.status = RunStatus.RUNNING
            self.tx.update_run(self.run.id, status=RunStatus.RUNNING, started_at=self.at)
            self.event("run.started")
        self.rows.update(self.tx.steps(self.run.id))
        self.to_recount.update(self.plan.order)
        for step_id, row in self.rows.items():
            if row.status is StepStatus.RUNNING and self.plan.steps[step_id].foreach is not None:
                self.refill(self.plan.steps[step_id])
        self.worklist.extend(self.plan.order)
        self.maybe_done = True
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

    def step_failed(self, failure: Failure) -> list[Dispatch]:
        """A step (already recorded as failed for good) fails the run, fast."""
        row = failure.row
        if self.on_failure is not None:
            self.on_failure(self.tx, failure)
        label = f"{row.step}[{row.item_index}]" if row.is_item else row.step
        self.fail_run(f"{label}: {failure.error}")
        return self.step_finished(row)

    def woken(self, row: StepRow) -> list[Dispatch]:
        """A waiting step is due (its timer or deadline), was woken (a signal, a decision), or is
        to start its next attempt: its kind decides what that means."""
        sp = self.plan.steps[row.step]
        if not row.is_item:
            self.rows[row.step] = row
        kind = self.kinds.of(sp)
        if row.wake == "restart":
            if self.run.status is RunStatus.PAUSED:
                return []  # its next attempt starts once the run is resumed
            self.event("step.restarted", row, {"attempt": row.attempts + 1})
            kind.start(self, row, sp, row.inputs)
        else:
            kind.wake(self, row, sp)
        return self.drain()

    # The loop

    def drain(self) -> list[Dispatch]:
        while self.worklist or self.to_refill:
            while self.worklist:
                self.consider(self.worklist.popleft())
            if self.to_refill:
                step = min(self.to_refill)
                self.to_refill.discard(step)
                self.load([step])
                self.refill(self.plan.steps[step])
        self.keep_one()
        self.flush()
        if self.to_recount:  # last, once every ended step has counted itself down
            self.recount(s for s in sorted(self.to_recount) if self.rows[s].status is StepStatus.PENDING)
            self.to_recount.clear()
        if (self.maybe_done or self.failing) and not self.run.status.terminal:
            if not self.tx.has_open_steps(self.run.id):
                self.finish_run()
                self.flush()  # a compensation it queued
        self.tx.add_events(self.events)
        self.events = []
        return self.dispatches

    def consider(self, step_id: str) -> None:
        sp = self.plan.steps[step_id]
        self.load([step_id])
        row = self.rows[step_id]
        if row.status is not StepStatus.PENDING:
            return
        self.load(sp.needs)
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
        if self.run.status is RunStatus.PAUSED:
            return  # ready, and left pending: resuming the run starts it
        self.begin(row, sp)

    def begin(self, row: StepRow, sp: StepPlan) -> None:
        context = self.context(sp)
        try:
            if sp.condition is not None and not sp.condition.render(context):
                self.settle(row, StepStatus.SKIPPED, reason=f"if was false: {_condition_text(sp)}")
                return
            if sp.foreach is None:
                inputs = _checked(sp.arguments.render(context), "with")
                self.kinds.of(sp).start(self, row, sp, inputs)
                return
            items = sp.foreach.render(context)
            if not isinstance(items, list):
                raise EvaluationError(f"foreach gave {type(items).__name__}, not a list")
            _check_item_count(items)
            inputs = [sp.arguments.render({**context, "item": v, "index": i}) for i, v in enumerate(items)]
            _checked(inputs, "with")
        except EvaluationError as exc:
            self.fail_unrun(row, f"EvaluationError: {exc.message}", "EvaluationError", "an expression failed")
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
        self.flush()
        none_pending = False  # known: none of its items is pending (they were just looked for)
        if self.run.status is RunStatus.PAUSED:
            pass  # no new item starts; resuming the run refills
        elif not self.failing or sp.trigger is Trigger.ALL_DONE:
            limit, room, highest = sp.step.concurrency, None, None
            if limit is not None:
                in_flight, highest = self.tx.items_in_flight(self.run.id, sp.id)
                room = limit - in_flight
            if room is None or room > 0:
                chosen = self.tx.pending_items(self.run.id, sp.id, room, above=highest)
                none_pending = not chosen
                if self.kinds.of(sp).queues:
                    for item_id, index in chosen:
                        self.dispatch(item_id, sp.timeout, Label(self.plan.workflow.name, sp.id, self.run.id, index, 1))
                        self.events.append(self.event_row("step.queued", sp.id, index))
                else:  # a kind that starts in place (a child run per item)
                    self.start_items(sp, [item_id for item_id, _ in chosen])
                if chosen:
                    return
        else:  # the run is failing: items not yet started never will be
            cancelled = self.tx.cancel_where(
                self.run.id, (StepStatus.PENDING,), FAIL_FAST_REASON, at=self.at, step=sp.id, items_only=True
            )
            detail = {"reason": FAIL_FAST_REASON}
            self.events += [self.event_row("step.cancelled", e.step, e.item_index, detail) for e in cancelled]
            none_pending = True
        if not self.tx.has_open_items(self.run.id, sp.id, pending=not none_pending):
            self.close_foreach(row)

    def start_items(self, sp: StepPlan, item_ids: list[int]) -> None:
        """Start items in place, in this transaction; an item that ends at once (it could not
        start) has its step refilled after this pass, never inside it."""
        kind = self.kinds.of(sp)
        for item_id in item_ids:
            item = self.tx.step_run(item_id)
            assert item is not None
            kind.start(self, item, sp, item.inputs)

    def close_foreach(self, row: StepRow) -> None:
        results = self.tx.item_results(self.run.id, row.step)
        failed = [(i, error) for i, (status, _, error) in enumerate(results) if status is StepStatus.FAILED]
        if failed:
            index, error = failed[0]
            self.settle(row, StepStatus.FAILED, error=f"item {index}: {error}")
        elif any(status is not StepStatus.SUCCEEDED for status, _, _ in results):
            self.settle(row, StepStatus.CANCELLED, reason=ITEMS_CANCELLED)
        else:
            self.settle(row, StepStatus.SUCCEEDED, output=[output for _, output, _ in results])

    # Transitions

    def queue(self, row: StepRow, inputs: Any) -> None:
        """Send the step to a worker: the task kind's start."""
        sent = Dispatch(
            row.id, new_dispatch_id(), timeout=self.plan.steps[row.step].timeout, label=label_for(self.plan, row)
        )
        self.to_queue.append((sent, inputs))  # written by flush(), with the others
        row.status = StepStatus.QUEUED
        self.dispatches.append(sent)
        self.event("step.queued", row)

    def dispatch(self, step_run_id: int, timeout: float | None = None, about: Label | None = None) -> None:
        """Queue a foreach item (its inputs were stored when the step expanded)."""
        dispatch_id = new_dispatch_id()
        self.queued.append((step_run_id, dispatch_id))
        self.dispatches.append(Dispatch(step_run_id, dispatch_id, timeout=timeout, label=about))

    def flush(self) -> None:
        """Write the steps and items chosen so far as queued, before anything reads their status again."""
        if self.to_queue:
            self.tx.queue([(d.step_run_id, inputs, d.dispatch_id) for d, inputs in self.to_queue], self.at)
            self.to_queue = []
        if self.queued:
            self.tx.queue_many(self.queued, self.at)
            self.queued = []

    def keep_one(self) -> None:
        """Offer the steps about to be queued to ``keep`` (the executor's local continuation): the
        first it takes is claimed in place of being queued, and sends no message."""
        if self.keep is None or not self.to_queue:
            return
        self.tx.add_events(self.events)  # logged before the claim's own event
        self.events = []
        for i, (sent, inputs) in enumerate(self.to_queue):
            if self.keep(self.tx, sent, inputs):
                del self.to_queue[i]
                self.dispatches.remove(sent)
                return

    def settle(
        self,
        row: StepRow,
        status: StepStatus,
        *,
        output: Any = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A step, or an item that waited, reaches a terminal state here, inside the advance."""
        ended = {"status": status, "output": output, "error": error, "reason": reason, "finished_at": self.at}
        if row.status is StepStatus.WAITING:  # what it waited for, and when, no longer applies
            ended.update(wake=None, not_before=None, wait_event=None, wait_key=None)
            if row.wait_kind == "workflow" and row.wait_key and row.wake != "child":
                self.dispatches.append(stop(row.wait_key))  # the child no step waits on any more
        self.tx.update_step(row.id, **ended)
        row.status, row.output, row.error, row.reason = status, output, error, reason
        detail = {k: v for k, v in (("error", error), ("reason", reason)) if v is not None}
        self.event(f"step.{status}", row, detail or None)
        if status is StepStatus.FAILED:
            self.fail_run(f"{row.step}[{row.item_index}]: {error}" if row.is_item else f"{row.step}: {error}")
        if row.is_item:
            self.to_refill.add(row.step)
        else:
            self.settled(row)

    def fail_unrun(self, row: StepRow, error: str, error_type: str, why: str) -> None:
        """A step fails for good before any attempt (its expressions failed): dead-lettered like any."""
        failure = Failure(row, self.plan, error, error_type, None, why, self.at)
        row.inputs = None
        if self.on_failure is not None:
            self.on_failure(self.tx, failure)
        self.settle(row, StepStatus.FAILED, error=error)

    # Waiting steps (the wait and approval kinds)

    def wait(
        self,
        row: StepRow,
        inputs: Any,
        kind: str,
        due: datetime | None,
        event: str | None = None,
        key: str | None = None,
    ) -> None:
        """The step waits, holding no worker: for a signal, a timer or people; ``due`` is when its
        timer or deadline falls (a wake-up message is sent when that is soon, else the reconciler
        wakes it)."""
        row.attempts += 1
        values = {
            "status": StepStatus.WAITING,
            "inputs": inputs,
            "attempts": row.attempts,
            "started_at": self.at,
            "wait_kind": kind,
            "wait_event": event,
            "wait_key": key,
            "wake": None,
            "not_before": due,
            "output": None,
            "dispatch_id": new_dispatch_id(),  # this wait's token: decisions are on one wait
        }
        self.tx.update_step(row.id, **values)
        for name, value in values.items():
            setattr(row, name, value)
        detail: dict[str, Any] = {"attempt": row.attempts, "for": kind}
        if event is not None:
            detail.update(event=event, key=key)
        elif kind == "workflow":
            detail["child_run"] = key
        if due is not None:
            detail["until"] = due.isoformat()
            self.wake_at(row, due)
        self.event("step.waiting", row, detail)

    def wake_at(self, row: StepRow, due: datetime) -> None:
        delay = (due - self.at).total_seconds()
        if delay <= self.wake_limit:
            self.dispatches.append(Dispatch(row.id, "", countdown=max(0.0, delay), wake=True))

    def complete(self, row: StepRow, output: Any, how: str) -> None:
        """A waiting step succeeded: a signal came, its timer fired, people decided."""
        output = _checked(output, "the step's output")
        self.tx.record_attempt(row, StepStatus.SUCCEEDED, None, self.at)
        self.event(f"step.{how}", row)
        self.settle(row, StepStatus.SUCCEEDED, output=output)

    def fail_waiting(self, row: StepRow, error: StepError) -> None:
        """A waiting step failed (timed out, rejected): its retry policy decides, as for a task."""
        sp = self.plan.steps[row.step]
        message = f"{type(error).__name__}: {error.message}"
        self.tx.record_attempt(row, StepStatus.FAILED, message, self.at)
        verdict = self.retry(row, sp, error)
        if verdict.retry and not self.failing:
            due = self.at + timedelta(seconds=verdict.delay)
            self.tx.update_step(row.id, wake="restart", not_before=due, wait_event=None, wait_key=None, error=message)
            detail = {"attempt": row.attempts, "error": message, "delay_s": round(verdict.delay, 3), "wait": True}
            self.event("step.retrying", row, detail)
            self.wake_at(row, due)
            return
        failure = Failure(row, self.plan, message, type(error).__name__, None, verdict.reason, self.at)
        if self.on_failure is not None:
            self.on_failure(self.tx, failure)
        self.settle(row, StepStatus.FAILED, error=message)

    def settled(self, row: StepRow) -> None:
        """Count the ended step down in each dependent; a dependent with no need left is judged."""
        if row.step.startswith(COMPENSATE_PREFIX):
            self.maybe_done = True  # the next compensation, or the run's end
            return
        dependents = counted_down(self.plan, row)
        if not dependents:
            self.maybe_done = True  # a leaf ended: the run may be over (checked once, in drain)
            return
        for dependent in self.tx.need_ended(self.run.id, dependents):
            self.rows[dependent.step] = dependent
            if dependent.status is StepStatus.PENDING and dependent.needs_open <= 0:
                self.worklist.append(dependent.step)
            elif dependent.status.terminal:  # it ran without this need (all_done, after a repair put the need back)
                self.maybe_done = True

    def recount(self, step_ids: Iterable[str]) -> None:
        """Set ``needs_open`` of pending steps from their needs' statuses (after a re-scan, a repair
        or fail-fast, once this transaction's ended steps have all been counted down)."""
        counts: dict[int, int] = {}
        for step_id in step_ids:
            needs = self.plan.steps[step_id].needs
            self.load(needs)
            row = self.rows[step_id]
            open_needs = sum(1 for n in needs if not self.rows[n].status.terminal)
            if row.needs_open != open_needs:
                counts[row.id] = row.needs_open = open_needs
        self.tx.set_needs_open(counts)

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
        self.flush()
        statuses = (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.WAITING)
        cancelled = self.tx.cancel_where(self.run.id, statuses, FAIL_FAST_REASON, keep, at=self.at)
        dropped = {e.id for e in cancelled}
        self.dispatches = [d for d in self.dispatches if d.step_run_id not in dropped or d.stop_run]
        self.dispatches += [stop(e.wait_key) for e in cancelled if e.wait_kind == "workflow" and e.wait_key]
        detail = {"reason": FAIL_FAST_REASON}
        self.events += [self.event_row("step.cancelled", e.step, e.item_index, detail) for e in cancelled]
        self.rows.update(self.tx.steps(self.run.id))
        self.to_recount.update(keep)
        for step in {e.step for e in cancelled if e.is_item}:
            self.refill(self.plan.steps[step])
        self.worklist.extend(keep)

    def finish_run(self) -> None:
        if not self.failing:
            broken = sorted(s for s, status in self.tx.step_statuses(self.run.id).items() if status in _FAILED_LIKE)
            if broken:  # nothing should end a step this way without failing the run; never call it success
                self.run.error = f"{broken[0]}: ended {self.tx.step_statuses(self.run.id)[broken[0]]}"
                self.tx.update_run(self.run.id, error=self.run.error)
                self.failing = True
        if self.failing:
            if self.compensate():
                return
            cancelled = isinstance(self.run.compensation, dict) and self.run.compensation.get("on") == "cancel"
            self.close_run(RunStatus.CANCELLED if cancelled else RunStatus.FAILED)
            return
        self.load(self.plan.outputs.refs.steps)
        try:
            outputs = _checked(self.plan.outputs.render(self.context_for(self.plan.outputs.refs.steps)), "outputs")
        except EvaluationError as exc:
            self.run.error = f"outputs: {exc.message}"
            self.tx.update_run(self.run.id, error=self.run.error)
            self.close_run(RunStatus.FAILED)
            return
        self.close_run(RunStatus.SUCCEEDED, outputs)

    def compensate(self) -> bool:
        """The run failed and nothing else runs: undo its succeeded steps one at a time, the last
        to succeed first. True while a compensation is under way; False once there is none left
        (or one failed for good), with how it went recorded on the run."""
        if not self.plan.compensations:
            return False
        rows = self.tx.steps(self.run.id)
        undone = {n.removeprefix(COMPENSATE_PREFIX): r for n, r in rows.items() if n.startswith(COMPENSATE_PREFIX)}
        broken = next((r for r in undone.values() if r.status is not StepStatus.SUCCEEDED), None)
        if broken is not None:
            self.record_compensation(False, undone, broken)
            return False
        todo = [  # a cached step did nothing in this run: there is nothing of this run's to undo
            r
            for s, r in rows.items()
            if s in self.plan.compensations and r.status is StepStatus.SUCCEEDED and s not in undone and not r.cached
        ]
        if not todo:
            if undone:
                self.record_compensation(True, undone)
            return False
        target = max(todo, key=lambda r: (r.finished_at or self.at, r.id))
        sp = self.plan.compensations[target.step]
        row = self.tx.insert_visit(self.run.id, sp.id)
        self.event("step.compensating", row, {"compensates": target.step})
        self.load(sp.arguments.refs.steps)
        try:
            context = {**self.context_for(sp.arguments.refs.steps), "output": target.output}
            inputs = _checked(sp.arguments.render(context), "with")
        except EvaluationError as exc:
            self.fail_unrun(row, f"EvaluationError: {exc.message}", "EvaluationError", "an expression failed")
            return self.compensate()
        self.kinds.of(sp).start(self, row, sp, inputs)
        return True

    def record_compensation(self, ok: bool, undone: dict[str, StepRow], broken: StepRow | None = None) -> None:
        order = [r.step.removeprefix(COMPENSATE_PREFIX) for r in sorted(undone.values(), key=lambda r: r.id)]
        found = {**(self.run.compensation or {}), "compensated": ok, "steps": order}
        if broken is not None:
            found.update(failed=broken.step, error=broken.error or broken.reason)
        self.run.compensation = found
        self.tx.update_run(self.run.id, compensation=found)
        self.event("run.compensated", detail=found)

    def close_run(self, status: RunStatus, outputs: Any = None) -> None:
        self.tx.update_run(self.run.id, status=status, outputs=outputs, finished_at=self.at)
        self.run.status = status
        self.event(f"run.{status}", detail={"error": self.run.error} if self.run.error else None)
        parent_row = self.run.parent_step_run_id
        if parent_row is not None and self.tx.child_ended(parent_row, self.run.id, self.at):
            self.dispatches.append(Dispatch(parent_row, "", wake=True, local=True))  # its parent's step goes on
        if self.runtime is not None:
            self.run.outputs = outputs
            dispatches, events = self.runtime.after_run(self.tx, self.run)
            self.dispatches += dispatches
            self.events += events

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
        return {"inputs": self.run.inputs, "steps": steps, "secrets": REFERENCES}

    def event(self, kind: str, row: StepRow | None = None, detail: dict[str, Any] | None = None) -> None:
        step = None if row is None else row.step
        index = None if row is None or not row.is_item else row.item_index
        self.events.append(self.event_row(kind, step, index, detail))

    def event_row(
        self, kind: str, step: str | None, index: int | None, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if index == STEP_ROW:
            index = None
        return {"run_id": self.run.id, "step": step, "item_index": index, "kind": kind, "detail": detail, "at": self.at}


def counted_down(plan: Plan, row: StepRow) -> tuple[str, ...]:
    """The steps whose ``needs_open`` counts ``row``'s end (in a DAG's advance: its dependents)."""
    if row.is_item or plan.machine is not None or row.step.startswith(COMPENSATE_PREFIX):
        return ()
    return tuple(plan.steps[row.step].dependents)


def _checked(value: Any, where: str) -> Any:
    """Rendered data must be something the store can hold (no NaN, infinity or NUL character)."""
    try:
        storable(value)
    except ValueError as exc:
        raise EvaluationError(f"{where} gave a value the state store cannot hold: {exc}") from None
    return value


def _check_item_count(items: list[Any]) -> None:
    """A foreach expands to one row per item, in one transaction: past ``ORCHESTRATOR_MAX_FOREACH_ITEMS``
    the step fails instead (``${{ [0] * 1900000 }}`` is a small list to build, and 1.9M rows to insert)."""
    limit = get_settings().max_foreach_items
    if len(items) > limit:
        raise EvaluationError(
            f"foreach gave {len(items):,} items; ORCHESTRATOR_MAX_FOREACH_ITEMS allows {limit:,} (split the list)"
        )


def _condition_text(sp: StepPlan) -> str:
    condition = sp.step.if_
    return str(condition)[:200]
