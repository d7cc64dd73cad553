"""What operators do to a run in flight or after it failed: pause and resume it, retry it (from its
failed steps, or from a step), skip a step or accept it with an output.

Each decides in one transaction under the run's lock, records an event naming who and why, and
sends what is ready once it commits. Open dead-letter entries of a step a person retried, skipped
or accepted are resolved: the failure was dealt with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from orchestrator import audit
from orchestrator.definition import Plan, Step
from orchestrator.errors import NotFound, Refused, UsageError, ValidationError, shown
from orchestrator.runtime import typed
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who, check_payload, lock_family, open_run, run_event
from orchestrator.runtime.scheduler import FAIL_FAST_REASON, ITEMS_CANCELLED, Dispatch, label_for, new_dispatch_id
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import RunRow, StepRow, Tx, now
from orchestrator.store.rows import event_row

log = logging.getLogger(__name__)

RETRY_FIELDS = {"--step": "step", "--from": "from"}  # the CLI's options, as the API's body names them
_REDO = frozenset({StepStatus.FAILED, StepStatus.CANCELLED})


@dataclass
class Repaired:
    run_id: str
    status: RunStatus
    steps: list[str] = field(default_factory=list)
    note: str | None = None
    dispatches: list[Dispatch] = field(default_factory=list)


def pause(engine: Engine, run_id: str, who: Who) -> Repaired:
    """No new step starts (a message already sent is held back at its claim); running steps
    finish and are recorded; waiting steps keep waiting. Its running child runs pause too."""
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        if run.status is RunStatus.PAUSED:
            return Repaired(run_id, run.status, note="already paused")
        if run.status.terminal:
            raise Refused(f"run {run_id} already ended {run.status}; there is nothing to pause")
        at = now()
        for member in lock_family(tx, run):
            if member.status is RunStatus.PAUSED:
                continue
            tx.update_run(member.id, status=RunStatus.PAUSED)
            detail = who.detail() if member is run else {"reason": f"its parent run {member.parent_run_id} paused"}
            tx.add_events([run_event(member.id, None, None, "run.paused", detail, at)])
        audit.record(tx, who, "run.pause", f"run:{run_id}")
    return Repaired(run_id, RunStatus.PAUSED)


def resume(engine: Engine, run_id: str, who: Who) -> Repaired:
    """The run goes on: whatever became ready while it was paused is dispatched now; so do its
    paused child runs."""
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        if run.status is not RunStatus.PAUSED:
            raise Refused(f"run {run_id} is {run.status}, not paused")
        done = Repaired(run_id, run.status)
        at = now()
        for member in lock_family(tx, run):
            if member.status is not RunStatus.PAUSED:
                continue
            tx.update_run(member.id, status=RunStatus.RUNNING)
            member.status = RunStatus.RUNNING
            detail = who.detail() if member is run else {"reason": f"its parent run {member.parent_run_id} resumed"}
            tx.add_events([run_event(member.id, None, None, "run.resumed", detail, at)])
            plan = engine.plans.get(tx, member.version)
            done.dispatches += engine.advancer(tx, plan, member).start() + _send_held(tx, plan, member.id)
            for row in tx.due_waits(now(), limit=1_000_000, run_id=member.id):  # restarts held while paused
                if row.wake == "restart":
                    done.dispatches += engine.advancer(tx, plan, member).woken(row)
        done.status = run.status
        audit.record(tx, who, "run.resume", f"run:{run_id}")
    engine.send(done.dispatches)
    return done


def _send_held(tx: Tx, plan: Plan, run_id: str) -> list[Dispatch]:
    """Steps held back while the run was paused (their messages spent, their inputs kept) go now."""
    at, sent = now(), []
    for row in tx.due_deferred(at, limit=1_000_000, run_id=run_id):
        token = new_dispatch_id()
        if tx.redispatch(row.id, None, token, at):
            tx.add_events([event_row(row, "step.woken", {"why": "the run resumed"}, at)])
            sent.append(Dispatch(row.id, token, timeout=plan.steps[row.step].timeout, label=label_for(plan, row)))
    return sent


def retry(engine: Engine, run_id: str, who: Who, step: str | None = None, from_step: str | None = None) -> Repaired:
    """Run an ended run again: its failed and cancelled steps (succeeded ones keep their outputs
    and do not run again); ``step``: that failed step and what did not succeed after it;
    ``from_step``: that step and everything downstream of it, whatever their status."""
    if step is not None and from_step is not None:
        raise UsageError("give --step or --from, not both", RETRY_FIELDS)
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        plan = engine.plans.get(tx, run.version)
        _check_ended(run, allow_succeeded=from_step is not None)
        _check_retryable(tx, run, plan, step or from_step)
        rows = tx.steps(run_id)
        names = _to_retry(plan, rows, step, from_step)
        tx.reset_steps(run_id, names, whole=from_step is not None)
        tx.resolve_dead_letters_of(run_id, names, now())
        tx.update_run(run_id, status=RunStatus.RUNNING, error=None, outputs=None, finished_at=None)
        run.status, run.error = RunStatus.RUNNING, None
        detail = who.detail(steps=names, **({"from": from_step} if from_step else {}))
        tx.add_events([run_event(run_id, None, None, "run.retried", detail, now())])
        done = Repaired(run_id, run.status, steps=names)
        done.dispatches = engine.advancer(tx, plan, run).start()
        done.status = run.status
        audit.record(
            tx, who, "run.retry", f"run:{run_id}", {"steps": names, **({"from": from_step} if from_step else {})}
        )
    engine.send(done.dispatches)
    return done


def skip(engine: Engine, run_id: str, step: str, who: Who) -> Repaired:
    """A failed or waiting step is skipped (its output is null); the run goes on."""
    return _force(engine, run_id, step, who, StepStatus.SKIPPED, None)


def accept(engine: Engine, run_id: str, step: str, output: Any, who: Who) -> Repaired:
    """A failed or waiting step succeeds with ``output``, as if it had returned it; the run goes on."""
    check_payload(output, "the output")
    return _force(engine, run_id, step, who, StepStatus.SUCCEEDED, output)


def _accepted_output(step: Step, output: Any) -> Any:
    """An accepted output obeys the step's ``output_schema`` as a returned one would (a model
    that cannot be imported in this process is not checked here)."""
    schema = step.output_schema
    if schema is None or step.foreach is not None:
        return output
    if isinstance(schema, str):
        try:
            typed.resolve_model(schema, "output_schema")
        except typed.ModelNotImportable as exc:
            log.warning("--output not checked against %s: %s", schema, exc.message)
            return output
    try:
        return typed.check(schema, output, "output_schema")
    except ValidationError as exc:
        raise UsageError(f"--output refused: {exc.message}", {"--output refused": "output refused"}) from None


def _force(engine: Engine, run_id: str, step: str, who: Who, status: StepStatus, output: Any) -> Repaired:
    verb = "skipped" if status is StepStatus.SKIPPED else "accepted"
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        plan = engine.plans.get(tx, run.version)
        if step not in plan.steps:
            raise NotFound(f"run {shown(run_id)} has no step '{shown(step)}'")
        if status is StepStatus.SUCCEEDED:
            output = _accepted_output(plan.steps[step].step, output)
        if run.status is RunStatus.CANCELLED:
            raise Refused(f"run {run_id} was cancelled; retry it to run it again")
        found = tx.current_row(run_id, step)
        if found is None or found.status not in (StepStatus.FAILED, StepStatus.WAITING):
            state = found.status if found else "not started"
            raise Refused(f"step '{step}' is {state}; only a failed or waiting step can be {verb}")
        row, step = found, found.step
        at = now()
        tx.resolve_dead_letters_of(run_id, [step], at)
        action = "operator.skip" if status is StepStatus.SKIPPED else "operator.accept"
        tx.add_events([event_row(row, action, who.detail(), at)])
        reason = f"{verb} by {who.by}" + (f": {who.reason}" if who.reason else "")
        done = Repaired(run_id, run.status, steps=[step])
        advancer = engine.advancer(tx, plan, run)
        if row.status is StepStatus.WAITING:  # it never ended: it ends now, and its dependents count it
            advancer.settle(row, status, output=output, reason=reason if status is StepStatus.SKIPPED else None)
            done.dispatches = advancer.drain()
        else:  # it failed and was counted then: the run is revived unless another step still fails
            _check_retryable(tx, run, plan, None)
            tx.update_step(row.id, status=status, output=output, error=None, reason=reason, finished_at=at)
            tx.retire_items(run_id, step, reason)
            tx.add_events([event_row(row, f"step.{status}", {"reason": reason}, at)])
            done.dispatches, done.note = _revive(tx, run, advancer)
        done.status = run.status
        detail = {"step": step, **({"output": output} if status is StepStatus.SUCCEEDED else {})}
        audit.record(tx, who, "step.skip" if status is StepStatus.SKIPPED else "step.accept", f"run:{run_id}", detail)
    engine.send(done.dispatches)
    return done


def _revive(tx: Tx, run: RunRow, advancer: Any) -> tuple[list[Dispatch], str | None]:
    failing = tx.first_failures([run.id])
    if failing:
        other, _ = failing[run.id]
        return [], f"the run stays failed: step '{other}' failed too"
    tx.reopen_steps_of([run.id], [FAIL_FAST_REASON], ITEMS_CANCELLED)
    tx.resume_runs([run.id])
    if run.status is not RunStatus.PAUSED:
        run.status = RunStatus.RUNNING
    run.error = None
    advancer.failing = False
    advancer.event("run.resumed", detail={"why": "its failed step was resolved"})
    return advancer.start(), None


def _check_retryable(tx: Tx, run: RunRow, plan: Plan, step: str | None) -> None:
    """What a retry cannot mend: a run whose steps were undone, a child run its parent's step
    gave up on, a state machine's visit named by --step or --from."""
    if isinstance(run.compensation, dict) and "compensated" in run.compensation:
        raise Refused(
            f"run {run.id} was compensated (its succeeded steps were undone): start a new run, or replay a "
            "failed compensation (orchestrator dlq replay)"
        )
    if run.parent_step_run_id is not None:
        waiter = tx.step_run(run.parent_step_run_id)
        if waiter is None or waiter.status is not StepStatus.WAITING or waiter.wait_key != run.id:
            raise Refused(
                f"run {run.id} is a child run its parent's step no longer waits on: retry the parent run "
                f"{run.parent_run_id} instead"
            )
    if plan.machine is not None and step is not None:
        raise Refused(
            "--step and --from do not apply to a state machine: retry RUN runs its failed visit again",
            {**RETRY_FIELDS, "retry RUN runs": "a retry without them runs"},
        )


def _check_ended(run: RunRow, allow_succeeded: bool) -> None:
    if not run.status.terminal:
        raise Refused(
            f"run {run.id} is {run.status}; retry applies to a run that ended (cancel it first, or use skip/accept)"
        )
    if run.status is RunStatus.SUCCEEDED and not allow_succeeded:
        raise Refused(
            f"run {run.id} succeeded; use --from STEP to run part of it again", {"--from STEP": "from (a step)"}
        )


def _to_retry(plan: Plan, rows: dict[str, StepRow], step: str | None, from_step: str | None) -> list[str]:
    for name in (step, from_step):
        if name is not None and name not in plan.steps:
            raise NotFound(f"the run has no step '{shown(name)}'")
    if from_step is not None:
        return sorted({from_step} | _downstream(plan, from_step))
    if step is not None:
        if rows[step].status not in _REDO:
            raise Refused(f"step '{step}' is {rows[step].status}; only a failed or cancelled step can be retried")
        later = {s for s in _downstream(plan, step) if rows[s].status is not StepStatus.SUCCEEDED}
        return sorted({step} | later)
    names = sorted(s for s, r in rows.items() if r.status in _REDO or _skipped_for_a_need(r))
    if not any(rows[s].status in _REDO for s in names):
        raise Refused("the run has no failed or cancelled step to retry")
    return names


def _skipped_for_a_need(row: StepRow) -> bool:
    return row.status is StepStatus.SKIPPED and (row.reason or "").startswith(("need ", "no need succeeded"))


def _downstream(plan: Plan, step: str) -> set[str]:
    found: set[str] = set()
    todo = list(plan.steps[step].dependents)
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(plan.steps[current].dependents)
    return found
