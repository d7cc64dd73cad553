"""Executing one delivered task step: claim it under a lease, run it through the middleware,
record the outcome and advance the run.

What the step's function does is the user's: any exception it raises fails the attempt and is
recorded. What happens around it is ours: if recording fails (the store is down, a soft time limit
fires while we write), the outcome is written again for a while; if that cannot be done the claim
is released, so a redelivery or the reconciler retakes the step. A claim is never left held by a
live process that has stopped working on it.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.definition import Plan
from orchestrator.definition.allowlist import Allowlist, moved_hint
from orchestrator.definition.machine import state_of
from orchestrator.definition.plan import COMPENSATE_PREFIX
from orchestrator.errors import (
    BadMessage,
    GateNotMet,
    OutputNotSerialisable,
    OutputNotStorable,
    StateStoreError,
    StoreRefused,
    TaskNotAllowed,
    TaskNotFound,
    WorkerLost,
)
from orchestrator.runtime import secrets
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.lease import Holder
from orchestrator.runtime.machine import gate_problem
from orchestrator.runtime.middleware import Call, Defer
from orchestrator.runtime.scheduler import Dispatch, Failure, counted_down, label_for, new_dispatch_id
from orchestrator.runtime.typed import to_data
from orchestrator.settings import get_settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import RunRow, StepRow, Tx, now, storable
from orchestrator.store.rows import event_row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Succeeded:
    output: Any
    call: Call | None = None


@dataclass(frozen=True)
class Failed:
    error: Exception
    traceback: str
    message: str | None = None  # the error as recorded, when it is not ``Type: text`` (a secret redacted)


@dataclass(frozen=True)
class Deferred:
    retry_at: datetime
    why: str


Outcome = Succeeded | Failed | Deferred


@dataclass
class Continuation:
    """How much more a delivery may run in-process: a step it made ready is claimed in the same
    transaction that recorded its own, and run here with no broker hop (it is leased and recorded
    exactly as a delivered step, so a crash leaves it to the reconciler like any other)."""

    steps: int
    until: float  # time.monotonic() after which no further step is taken

    def allows(self) -> bool:
        return self.steps > 0 and time.monotonic() < self.until


@dataclass(frozen=True)
class Taken:
    row: StepRow
    plan: Plan
    token: str


class Executor:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        assert engine.lease is not None
        self.lease = engine.lease
        self._budget: Continuation | None = None
        self._taken: Taken | None = None
        self._token = ""  # the delivered message's id: every step this execution runs is under it

    def execute(self, step_run_id: int, dispatch_id: str, may_continue: bool = False) -> list[Dispatch]:
        """Run one delivered step, record the result, and advance the run (idempotent per message).

        With ``may_continue`` (the delivery has no time limit of its own), a step it makes ready
        that has no timeout either is run next, here, within ``Timing.local_steps`` and
        ``local_budget_s``; the other messages it leads to are sent before that step starts."""
        holder = self.lease.holder()
        claimed = self._claim(step_run_id, dispatch_id, holder)
        if isinstance(claimed, list):
            return claimed
        timing = self.engine.timing
        if may_continue and timing.local_steps > 0:
            self._budget = Continuation(timing.local_steps, time.monotonic() + timing.local_budget_s)
        row, plan = claimed
        self._token = dispatch_id
        taken: Taken | None = Taken(row, plan, dispatch_id)
        while True:
            assert taken is not None
            try:
                dispatches = self._execute_claimed(taken.row, taken.plan, taken.token)
            except BaseException:
                self._forget_taken()  # its lease lapses: the reconciler retakes it
                raise
            taken, self._taken = self._taken, None
            if taken is None:
                return dispatches
            try:
                self.engine.send(dispatches)
            except BaseException:
                self.lease.drop(taken.row.id)
                raise

    def _execute_claimed(self, row: StepRow, plan: Plan, token: str) -> list[Dispatch]:
        self.lease.hold(row.id)
        try:
            try:
                outcome = self._run(row, plan)
            except Exception as exc:  # ours, not the step's: give the claim back before failing
                self._release(row, exc)
                raise
            return self._record(row, plan, token, outcome)
        finally:
            self.lease.drop(row.id)

    # Claiming

    def _claim(self, step_run_id: int, dispatch_id: str, holder: Holder) -> tuple[StepRow, Plan] | list[Dispatch]:
        at = now()
        with self.engine.repo.statements() as tx:
            claimed = tx.claim(step_run_id, dispatch_id, holder.id, holder.name, self.engine.timing.lease_s, at)
        if claimed is None:
            return self._retake(step_run_id, dispatch_id, holder)
        row, version = claimed
        plan = self.engine.plans.cached(version)
        if plan is None:
            with self.engine.repo.transaction() as tx:
                plan = self.engine.plans.get(tx, version)
        return row, plan

    def _retake(self, step_run_id: int, dispatch_id: str, holder: Holder) -> tuple[StepRow, Plan] | list[Dispatch]:
        """A redelivery of a running step: ours again only if its lease lapsed (its holder died,
        hung up, or gave it back); otherwise a duplicate while the first delivery still runs."""
        with self.engine.repo.transaction() as tx:
            peek = tx.step_run(step_run_id)
            if peek is None:  # a message no dispatch of ours sent (or its run was purged since)
                raise BadMessage(f"refused: there is no step {step_run_id}")
            if peek.dispatch_id == dispatch_id and peek.status is StepStatus.QUEUED:
                return self._hold_back(tx, peek, dispatch_id, holder)
            if peek.dispatch_id != dispatch_id or peek.status is not StepStatus.RUNNING:
                return []  # stale, finished, cancelled or skipped: nothing to do
            run = tx.lock_run(peek.run_id)  # the run before the step: the order every writer locks in
            row = tx.step_run(step_run_id, lock=True)
            if run is None or row is None or row.dispatch_id != dispatch_id or row.status is not StepStatus.RUNNING:
                return []
            if not tx.lease_lapsed(row.id):
                return []
            plan = self.engine.plans.get(tx, run.version)
            lost = lose(self.engine, tx, plan, run, row)
            if lost is not None:
                return lost
            at = now()
            if run.status is RunStatus.PAUSED:  # its worker is gone: it is sent again after resume
                tx.update_step(row.id, status=StepStatus.QUEUED, dispatch_id=None, lease_expires_at=None, not_before=at)
                tx.add_events([event_row(row, "step.held", {"why": "the run is paused"}, at)])
                return []
            tx.take_over(row.id, holder.id, holder.name, self.engine.timing.lease_s, at)
            row.attempts, row.worker, row.worker_id, row.started_at = row.attempts + 1, holder.name, holder.id, at
            tx.add_events([event_row(row, "step.running", {"attempt": row.attempts, "worker": holder.name}, at)])
            return row, plan

    def _hold_back(
        self, tx: Tx, peek: StepRow, dispatch_id: str, holder: Holder
    ) -> tuple[StepRow, Plan] | list[Dispatch]:
        """A step of a paused run is not run: it is held in the store, queued with its inputs and no
        message, and resuming the run sends it again. If the run was resumed meanwhile, the claim
        is tried again."""
        run = tx.lock_run(peek.run_id)
        if run is None:
            return []
        if run.status is RunStatus.PAUSED:
            at = now()
            if tx.hold_back(peek.id, dispatch_id, at):
                tx.add_events([event_row(peek, "step.held", {"why": "the run is paused"}, at)])
            return []
        claimed = tx.claim(peek.id, dispatch_id, holder.id, holder.name, self.engine.timing.lease_s, now())
        if claimed is None:
            return []
        row, version = claimed
        return row, self.engine.plans.get(tx, version)

    # Running

    def _run(self, row: StepRow, plan: Plan) -> Outcome:
        sp = plan.steps[row.step]
        call = Call(row, plan, sp, dict(row.inputs or {}), load_context=lambda: self._context(row, plan))
        lookup = (
            secrets.Lookup(self.engine.repo, get_settings().secret_key_text) if secrets.uses(sp.arguments) else None
        )
        try:
            call.function = function = self.engine.resolve(sp.task)
            if lookup is not None:  # the function alone gets the values; row.inputs keep the references
                call.unready = secrets.resolve_call(call, lookup)
                if call.unready is not None and sp.step.cache is None:  # nothing could serve the step
                    raise call.unready
            result = self.engine.stack.call(call, lambda: function(**call.inputs))
            output = to_json(to_data(result))
        except Defer as exc:
            return Deferred(exc.retry_at, exc.message)
        except Exception as exc:  # any exception of a user's step fails the attempt; it is recorded
            error = self.engine.stack.after_error(call, exc)
            if lookup is None:
                return Failed(error, tb.format_exc())
            message = secrets.redact(f"{type(error).__name__}: {error}", lookup.seen)
            return Failed(error, secrets.redact(tb.format_exc(), lookup.seen), message)
        if lookup is not None:  # a function that returns a secret: neither its output nor its cache entry keep it
            output = secrets.redact_data(output, lookup.seen)
            call.cache_value = secrets.redact_data(call.cache_value, lookup.seen)
        self.engine.stack.after_success(call, output)
        return Succeeded(output, call)

    def _context(self, row: StepRow, plan: Plan) -> dict[str, Any]:
        """What the step's checks, cache key and secrets' rendering read: the run's inputs, its upstream
        outputs, a foreach item's ``item`` and ``index``, and a compensation's ``output``."""
        with self.engine.repo.transaction() as tx:
            run = tx.run(row.run_id)
            if run is None:
                return {"inputs": {}, "steps": {}}
            sp = plan.steps[row.step]
            advancer = self.engine.advancer(tx, plan, run)
            read = (*sp.asserts, sp.cache_key, sp.foreach, sp.arguments if secrets.uses(sp.arguments) else None)
            refs = set().union(*(t.refs.steps for t in read if t is not None))
            undoes = row.step.removeprefix(COMPENSATE_PREFIX) if row.step.startswith(COMPENSATE_PREFIX) else None
            advancer.load(refs | ({undoes} if undoes else set()))
            context = advancer.context_for(refs)
            if undoes:  # as when the compensation started: ``output`` is the output of the step it undoes
                context["output"] = advancer.rows[undoes].output
        if row.is_item and sp.foreach is not None:
            items = sp.foreach.render(context)
            item = items[row.item_index] if isinstance(items, list) and row.item_index < len(items) else None
            context = {**context, "item": item, "index": row.item_index}
        return context

    # Recording

    def _record(self, row: StepRow, plan: Plan, owner: str, outcome: Outcome) -> list[Dispatch]:
        """Write the outcome, trying again while the store is unavailable; release the claim if
        it cannot be written, so the step is retaken instead of held forever."""
        deadline = time.monotonic() + self.engine.timing.record_patience_s
        delay = 0.2
        while True:
            self._forget_taken()  # a claim made by a write that did not commit is void
            try:
                return self._write(row, plan, owner, outcome)
            except StoreRefused as exc:
                if not isinstance(outcome, Succeeded):
                    self._release(row, exc)
                    raise
                outcome = Failed(OutputNotStorable(f"the state store refused the output: {exc.message}"), "")
            except Exception as exc:
                if not _transient(exc) or time.monotonic() + delay > deadline:
                    self._release(row, exc)
                    raise
                log.warning("recording step %s failed (%s); trying again in %.1fs", row.id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _write(self, row: StepRow, plan: Plan, owner: str, outcome: Outcome) -> list[Dispatch]:
        if isinstance(outcome, Succeeded) and plan.machine is not None:
            unmet = self._gate(row, plan, outcome.output)
            if unmet is not None:  # the state's work is done but its exit criteria are not met
                outcome = Failed(GateNotMet(unmet), "")
        if isinstance(outcome, Succeeded):
            return self._succeeded(row, plan, owner, outcome.output, outcome.call)
        if isinstance(outcome, Deferred):
            return self._deferred(row, plan, owner, outcome)
        return self._failed(row, plan, owner, outcome)

    def _succeeded(self, row: StepRow, plan: Plan, owner: str, output: Any, call: Call | None) -> list[Dispatch]:
        hit = call.cached if call is not None else None
        with self.engine.repo.transaction() as tx:
            at = now()
            if hit is not None:
                run = tx.lock_run(row.run_id)
                if run is None or not tx.finish_cached(row, owner, at, output):
                    return []
            else:
                run, ended = tx.finish_locked(row, owner, at, output, counted_down(plan, row))
                if run is None or not ended:
                    return []
            if call is not None:
                self.engine.stack.after_succeeded(tx, call, output)
            done = StepRow(**{**row.__dict__, "status": StepStatus.SUCCEEDED, "output": output})
            advancer = self.engine.advancer(tx, plan, run)
            if self._budget is not None and self._budget.allows():
                advancer.keep = self._keep
            if hit is not None:
                done.attempts, done.cached = row.attempts - 1, True
                advancer.event("step.cached", done, {"from_run": hit.run_id})
            advancer.event("step.succeeded", done)
            return self._take_one(tx, advancer.step_finished(done))

    def _keep(self, tx: Tx, d: Dispatch, inputs: Any) -> bool:
        """The advance made a step ready: claim it for this process to run next, in place of
        queueing it (see ``execute``). Only a plain step message without a timeout of its own is
        kept: a timeout is enforced by Celery, per message."""
        return self._taken is None and _local(d) and self._claim_here(tx, d, pending=True, inputs=inputs)

    def _take_one(self, tx: Tx, dispatches: list[Dispatch]) -> list[Dispatch]:
        """If the advance kept no step (``_keep``), claim one of the foreach items it queued for
        this process to run next; the other dispatches are returned to be sent."""
        budget = self._budget
        if self._taken is not None or budget is None or not budget.allows():
            return dispatches
        for i, d in enumerate(dispatches):
            if _local(d) and self._claim_here(tx, d):
                return dispatches[:i] + dispatches[i + 1 :]
        return dispatches

    def _claim_here(self, tx: Tx, d: Dispatch, **how: Any) -> bool:
        """Claim ``d``'s step for this execution (under its message's token), leased and held."""
        assert self._budget is not None
        holder = self.lease.holder()
        lease_s = self.engine.timing.lease_s
        claimed = tx.claim(d.step_run_id, d.dispatch_id, holder.id, holder.name, lease_s, now(), self._token, **how)
        if claimed is None:
            return False
        row, version = claimed
        plan = self.engine.plans.cached(version) or self.engine.plans.get(tx, version)
        self._taken = Taken(row, plan, self._token)
        self.lease.hold(row.id)  # renewed from now on, while the other messages are sent
        self._budget.steps -= 1
        return True

    def _forget_taken(self) -> None:
        if self._taken is not None:
            self.lease.drop(self._taken.row.id)
            self._taken = None

    def _gate(self, row: StepRow, plan: Plan, output: Any) -> str | None:
        with self.engine.repo.transaction() as tx:
            run = tx.run(row.run_id)
            if run is None:
                return None
            return gate_problem(self.engine.advancer(tx, plan, run), state_of(row.step), output)

    def _deferred(self, row: StepRow, plan: Plan, owner: str, outcome: Deferred) -> list[Dispatch]:
        """Put the step back, due at ``retry_at``, giving back the attempt: a breaker burns no retry."""
        with self.engine.repo.transaction() as tx:
            if tx.lock_run(row.run_id) is None:
                return []
            detail = {"why": outcome.why, "until": outcome.retry_at.isoformat()}
            queued = queue_again(
                self.engine, tx, plan, row, owner, outcome.retry_at, "step.deferred", detail, attempts=row.attempts - 1
            )
        return queued or []

    def _failed(self, row: StepRow, plan: Plan, owner: str, outcome: Failed) -> list[Dispatch]:
        sp = plan.steps[row.step]
        call = Call(row, plan, sp, dict(row.inputs or {}))
        error, trace = outcome.error, _text(outcome.traceback) or None
        message = _text(outcome.message or f"{type(error).__name__}: {error}")
        verdict = self.engine.stack.retry_verdict(call, error)
        with self.engine.repo.transaction() as tx:
            run = tx.lock_run(row.run_id)
            at = now()
            if run is None:
                return []
            undoing = row.step.startswith(COMPENSATE_PREFIX)  # a compensation retries in a failed run
            if verdict.retry and run.status in (RunStatus.RUNNING, RunStatus.PAUSED) and (run.error is None or undoing):
                wake = at + timedelta(seconds=verdict.delay)
                detail = {"attempt": row.attempts, "error": message, "delay_s": round(verdict.delay, 3)}
                queued = queue_again(self.engine, tx, plan, row, owner, wake, "step.retrying", detail, error=message)
                if queued is not None:
                    tx.record_attempt(row, StepStatus.FAILED, message, at)
                return queued or []
            if not tx.finish(row, owner, StepStatus.FAILED, at, error=message, traceback=trace):
                return []
            failed = StepRow(**{**row.__dict__, "status": StepStatus.FAILED, "error": message, "traceback": trace})
            failure = Failure(failed, plan, message, type(error).__name__, trace, verdict.reason, at)
            return fail_for_good(self.engine, tx, plan, run, failure)

    def _release(self, row: StepRow, exc: BaseException) -> None:
        why = f"released after an error while recording: {type(exc).__name__}: {exc}"[:2000]
        try:
            with self.engine.repo.transaction() as tx:
                tx.release(row.id, row.attempts, why)
        except Exception as again:  # the store is unreachable: the lease lapses on its own
            log.warning("releasing step %s failed too (%s); its lease will lapse", row.id, again)


def queue_again(
    engine: Engine,
    tx: Tx,
    plan: Plan,
    row: StepRow,
    owner: str,
    wake: datetime,
    kind: str,
    detail: dict[str, Any],
    **values: Any,
) -> list[Dispatch] | None:
    """Queue a running step again for ``wake``: a delayed message, or past the countdown limit a
    wake-up held in the database, so no message waits unacknowledged in the broker for long.
    None when this delivery no longer holds the step."""
    at = now()
    delay = max(0.0, (wake - at).total_seconds())
    dispatch_id = None if delay > engine.timing.countdown_limit else new_dispatch_id()
    if not tx.finish_step_if(
        row,
        owner,
        status=StepStatus.QUEUED,
        dispatch_id=dispatch_id,
        queued_at=at,
        not_before=wake,
        lease_expires_at=None,
        **values,
    ):
        return None
    tx.add_events([event_row(row, kind, {**detail, "held": dispatch_id is None}, at)])
    timeout = plan.steps[row.step].timeout
    return [] if dispatch_id is None else [Dispatch(row.id, dispatch_id, delay, timeout, label=label_for(plan, row))]


def fail_for_good(engine: Engine, tx: Tx, plan: Plan, run: RunRow, failure: Failure) -> list[Dispatch]:
    """A step that will not be tried again: the middleware records it, and the run fails fast."""
    advancer = engine.advancer(tx, plan, run)
    detail = {"error": failure.error, "why": failure.why, "dead_letter": True}
    advancer.event("step.failed", failure.row, detail)
    return advancer.step_failed(failure)


def lose(engine: Engine, tx: Tx, plan: Plan, run: RunRow, row: StepRow) -> list[Dispatch] | None:
    """Count a lapsed lease against the step; past the poison limit it fails for good (and the
    dispatches that leads to are returned); None while it may run again. Caller holds the locks."""
    at = now()
    cause = row.error or f"the lease of worker {row.worker} lapsed"
    tx.record_attempt(row, StepStatus.FAILED, f"WorkerLost: {cause}", at)
    row.lost += 1
    tx.update_step(row.id, lost=row.lost)
    reason = engine.stack.after_lost(row)
    if reason is None:
        return None
    error = f"WorkerLost: {reason}; last on {row.worker}"
    tx.update_step(row.id, status=StepStatus.FAILED, error=error, finished_at=at, lease_expires_at=None)
    failed = StepRow(**{**row.__dict__, "status": StepStatus.FAILED, "error": error})
    failure = Failure(failed, plan, error, WorkerLost.__name__, None, "poison message", at)
    return fail_for_good(engine, tx, plan, run, failure)


def _local(d: Dispatch) -> bool:
    """A dispatch this process may run itself: a step message, due now, with no timeout."""
    return not (d.wake or d.local or d.stop_run is not None or d.countdown or d.timeout)


def _text(value: str) -> str:
    """Error text as the store can hold it (PostgreSQL's text refuses NUL characters)."""
    return value.replace("\x00", "\\x00")


def _transient(exc: BaseException) -> bool:
    """Errors worth writing again: the store unavailable, a soft time limit that fired meanwhile."""
    return isinstance(exc, StateStoreError) or type(exc).__name__ == "SoftTimeLimitExceeded"


def to_json(value: Any) -> Any:
    """The value as stored: JSON data, or OutputNotSerialisable (never retried)."""
    try:
        return storable(value)
    except ValueError as exc:
        raise OutputNotSerialisable(
            f"the step returned {type(value).__name__}, which is not JSON-serialisable: {exc}"
        ) from None


def resolve_function(task: str, allowlist: Allowlist | None = None) -> Callable[..., Any]:
    """``module:function`` to the function; other names need the worker layer's registry. Only a
    function of an allowed module (``ORCHESTRATOR_TASK_MODULES`` and the built-ins) is resolved:
    a module outside is not even imported."""
    allowlist = allowlist or Allowlist.current()
    refusal = allowlist.refusal(task)
    if refusal is not None:
        raise TaskNotAllowed(refusal)
    if ":" not in task:
        raise TaskNotFound(f"task '{task}' is not 'module:function' and no task registry is available")
    module_name, _, attr = task.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        hint = moved_hint(module_name, attr)
        raise TaskNotFound(f"task '{task}': cannot import '{module_name}': {exc}{hint}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TaskNotFound(f"task '{task}': module '{module_name}' has no '{attr}'")
    if not callable(target):
        raise TaskNotFound(f"task '{task}' is not callable")
    refusal = allowlist.target_refusal(task, target)
    if refusal is not None:
        raise TaskNotAllowed(refusal)
    return target
