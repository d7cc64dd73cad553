"""The runtime's operations: submit, execute a step, cancel, reconcile.

Each returns the ``Dispatch``es its transaction decided on; the caller (the worker layer, which
knows Celery) sends them after the commit. A message is only a hint: the state store decides
whether a delivery still owns a step, so redelivered, duplicated or stale messages are harmless.
"""

from __future__ import annotations

import json
import os
import socket
import traceback as tb
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from orchestrator.definition import BreakerConfig, Plan, Workflow, build_plan
from orchestrator.errors import (
    CircuitOpenError,
    InputsError,
    NotFound,
    OutputNotSerialisable,
    StateStoreError,
    TaskNotFound,
    UsageError,
)
from orchestrator.runtime.breaker import BreakerOpen, Breakers
from orchestrator.runtime.scheduler import Advancer, Dispatch, new_dispatch_id
from orchestrator.settings import (
    DEFAULT_BREAKER_UNAVAILABLE_WAIT_S,
    DEFAULT_MAX_COUNTDOWN_S,
    DEFAULT_POISON_LIMIT,
    DEFAULT_TRIAL_TTL_S,
)
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import Repository, RunRow, StepRow, Tx, now
from orchestrator.store.rows import event_row

Resolver = Callable[[str], Callable[..., Any]]
_NOT_RETRYABLE = (TaskNotFound, OutputNotSerialisable)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Submitted:
    run_id: str
    created: bool
    dispatches: list[Dispatch]


class PlanCache:
    """Plans by definition version: a run's pinned definition is compiled once per process."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}

    def cached(self, version: str) -> Plan | None:
        return self._plans.get(version)

    def add(self, plan: Plan) -> Plan:
        self._plans.setdefault(plan.version, plan)
        return plan

    def get(self, tx: Tx, version: str) -> Plan:
        plan = self._plans.get(version)
        if plan is None:
            snapshot = tx.definition(version)
            if snapshot is None:
                raise NotFound(f"no definition with version {version}")
            plan = self._plans[version] = build_plan(Workflow.model_validate(snapshot), check_tasks=False)
        return plan


class Runtime:
    def __init__(
        self,
        repo: Repository,
        resolve: Resolver | None = None,
        worker: str | None = None,
        *,
        poison_limit: int = DEFAULT_POISON_LIMIT,
        countdown_limit: float = DEFAULT_MAX_COUNTDOWN_S,
        breakers: Breakers | None = None,
    ) -> None:
        self.repo = repo
        self.breakers = breakers or Breakers(repo, None)
        self.poison_limit = poison_limit
        self.countdown_limit = countdown_limit
        self.plans = PlanCache()
        self.resolve = resolve or resolve_function
        self._worker = worker
        self._versions: dict[str, str] = {}

    @property
    def worker(self) -> str:
        """``host:pid`` of the process running steps (computed late: prefork children fork after init)."""
        return self._worker or default_worker_name()

    # Submitting

    def submit(self, plan: Plan, inputs: dict[str, Any], idempotency_key: str | None = None) -> Submitted:
        """Start a run of ``plan``; the same idempotency key gives back the same run."""
        check_inputs(plan.workflow, inputs)
        self.plans.add(plan)
        try:
            with self.repo.transaction() as tx:
                if idempotency_key is not None:
                    existing = tx.run_for_key(idempotency_key)
                    if existing is not None:
                        return Submitted(existing, False, [])
                run_id = str(uuid.uuid4())
                tx.save_definition(plan.version, plan.workflow.name, plan.workflow.snapshot())
                tx.insert_run(run_id, plan.workflow.name, plan.version, inputs, idempotency_key, plan.order)
                run = tx.lock_run(run_id)
                assert run is not None
                dispatches = Advancer(tx, plan, run).start()
            return Submitted(run_id, True, dispatches)
        except sa.exc.IntegrityError:
            if idempotency_key is None:
                raise
            with self.repo.transaction() as tx:
                existing = tx.run_for_key(idempotency_key)
            if existing is None:
                raise
            return Submitted(existing, False, [])

    def registered_plan(self, name: str) -> Plan:
        with self.repo.transaction() as tx:
            version = tx.latest_registered(name)
            if version is None:
                raise NotFound(f"no workflow named '{name}' is registered (orchestrator workflows list)")
            return self.plans.get(tx, version)

    def register(self, plan: Plan) -> bool:
        with self.repo.transaction() as tx:
            tx.save_definition(plan.version, plan.workflow.name, plan.workflow.snapshot())
            return tx.register(plan.workflow.name, plan.version)

    # Executing one step

    def execute(self, step_run_id: int, dispatch_id: str) -> list[Dispatch]:
        """Run one delivered step, record the result, and advance the run."""
        claimed = self._claim(step_run_id, dispatch_id)
        if isinstance(claimed, list):
            return claimed
        row, plan = claimed
        sp = plan.steps[row.step]
        try:
            function = self.resolve(sp.task)
            if sp.step.breaker is None:
                result = function(**(row.inputs or {}))
            else:
                result = self._through_breaker(plan, sp.step.breaker, function, sp.timeout, row.inputs or {})
            output = to_json(result)
        except BreakerUnavailable as exc:
            return self._deferred(row, plan, dispatch_id, exc.retry_at, exc.message)
        except Exception as exc:  # any exception of a user's step fails the attempt; it is recorded
            return self._failed(row, plan, dispatch_id, exc, tb.format_exc())
        return self._succeeded(row, plan, dispatch_id, output)

    def _through_breaker(
        self, plan: Plan, name: str, function: Callable[..., Any], timeout: float | None, inputs: dict[str, Any]
    ) -> Any:
        config = plan.workflow.breakers.get(name) or BreakerConfig()
        try:
            return self.breakers.call(name, config, function, timeout or DEFAULT_TRIAL_TTL_S, **inputs)
        except BreakerOpen as exc:
            raise BreakerUnavailable(exc.message, exc.retry_at) from None
        except (redis.RedisError, StateStoreError) as exc:
            # A breaker we cannot read is not a closed breaker: make no call, come back shortly.
            retry_at = now() + timedelta(seconds=DEFAULT_BREAKER_UNAVAILABLE_WAIT_S)
            raise BreakerUnavailable(f"breaker {name} cannot be read ({exc}); no call was made", retry_at) from None

    def _deferred(self, row: StepRow, plan: Plan, owner: str, retry_at: datetime, why: str) -> list[Dispatch]:
        """Put the step back, due at ``retry_at``, giving back the attempt: a breaker burns no retry."""
        with self.repo.transaction() as tx:
            if tx.lock_run(row.run_id) is None:
                return []
            detail = {"why": why, "until": retry_at.isoformat()}
            queued = self._queue_again(
                tx, plan, row, owner, retry_at, "step.deferred", detail, attempts=row.attempts - 1
            )
        return queued or []

    def _queue_again(
        self,
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
        None when this delivery no longer owns the step."""
        at = now()
        delay = max(0.0, (wake - at).total_seconds())
        dispatch_id = None if delay > self.countdown_limit else new_dispatch_id()
        if not tx.finish_step_if(
            row.id, owner, status=StepStatus.QUEUED, dispatch_id=dispatch_id, queued_at=at, not_before=wake, **values
        ):
            return None
        tx.add_events([event_row(row, kind, {**detail, "held": dispatch_id is None}, at)])
        return [] if dispatch_id is None else [Dispatch(row.id, dispatch_id, delay, plan.steps[row.step].timeout)]

    def _claim(self, step_run_id: int, dispatch_id: str) -> tuple[StepRow, Plan] | list[Dispatch]:
        """Take ownership of a step for this delivery; else the dispatches deciding not to run it led to."""
        at = now()
        with self.repo.statements() as tx:
            claimed = tx.claim(step_run_id, dispatch_id, self.worker, at)
        if claimed is None:
            with self.repo.transaction() as tx:
                row = self._retake(tx, step_run_id, dispatch_id, at)
                if not isinstance(row, StepRow):
                    return row
                tx.add_events([event_row(row, "step.running", {"attempt": row.attempts, "worker": row.worker}, at)])
                return row, self._plan_of_run(tx, row.run_id)
        row, version = claimed
        plan = self.plans.cached(version)
        if plan is None:
            with self.repo.transaction() as tx:
                plan = self.plans.get(tx, version)
        return row, plan

    def _retake(self, tx: Tx, step_run_id: int, dispatch_id: str, at: datetime) -> StepRow | list[Dispatch]:
        """A redelivery of a running step: ours again only if the process that ran it is gone."""
        peek = tx.step_run(step_run_id)
        if peek is None or peek.dispatch_id != dispatch_id or peek.status is not StepStatus.RUNNING:
            return []  # stale, finished, cancelled or skipped: nothing to do
        run = tx.lock_run(peek.run_id)  # the run before the step: the order every writer locks in
        row = tx.step_run(step_run_id, lock=True)
        if run is None or row is None or row.dispatch_id != dispatch_id or row.status is not StepStatus.RUNNING:
            return []
        if not self._owner_lost(tx, row.worker):
            return []  # a duplicate delivery while the first is still running
        poisoned = self._poisoned(tx, run, row, at)
        if poisoned is not None:
            return poisoned
        row.attempts += 1
        row.worker, row.started_at = self.worker, at
        tx.update_step(row.id, attempts=row.attempts, worker=row.worker, started_at=at)
        return row

    def _poisoned(self, tx: Tx, run: RunRow, row: StepRow, at: datetime) -> list[Dispatch] | None:
        """Count a lost worker against the step; past the poison limit it fails for good (and the
        dispatches that leads to are returned); None while it may run again."""
        lost_by = row.worker
        tx.record_attempt(row, StepStatus.FAILED, f"WorkerLost: worker {lost_by} was lost", at)
        row.lost += 1
        tx.update_step(row.id, lost=row.lost)
        if row.lost < self.poison_limit:
            return None
        row.error = (
            f"WorkerLost: the worker running this step was lost {row.lost} times "
            f"(poison limit {self.poison_limit}); last on {lost_by}"
        )
        tx.update_step(row.id, status=StepStatus.FAILED, error=row.error, finished_at=at)
        row.status = StepStatus.FAILED
        plan = self._plan_of_run(tx, row.run_id)
        return self._failed_for_good(tx, plan, run, row, "WorkerLost", "poison message", at)

    def _plan_of_run(self, tx: Tx, run_id: str) -> Plan:
        version = self._versions.get(run_id)
        if version is None:
            run = tx.run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            version = self._versions[run_id] = run.version
            if len(self._versions) > 10_000:
                self._versions.pop(next(iter(self._versions)))
        return self.plans.get(tx, version)

    def _owner_lost(self, tx: Tx, owner: str | None) -> bool:
        """Whether the process recorded as running a step is gone (then a redelivery may retake it)."""
        if owner is None:
            return True
        host, _, pid = owner.rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            return not _process_exists(int(pid))
        return not tx.worker_alive(host, now() - timedelta(seconds=_heartbeat_grace()))

    def _succeeded(self, row: StepRow, plan: Plan, dispatch_id: str, output: Any) -> list[Dispatch]:
        with self.repo.transaction() as tx:
            run = tx.lock_run(row.run_id)
            at = now()
            if run is None or not tx.finish(row, dispatch_id, StepStatus.SUCCEEDED, at, output=output):
                return []
            row.status, row.output = StepStatus.SUCCEEDED, output
            advancer = Advancer(tx, plan, run)
            advancer.event("step.succeeded", row)
            return advancer.step_finished(row)

    def _failed(self, row: StepRow, plan: Plan, dispatch_id: str, exc: Exception, trace: str) -> list[Dispatch]:
        exc = _as_timeout(exc, plan.steps[row.step].timeout)
        error = f"{type(exc).__name__}: {exc}"
        decision = plan.steps[row.step].retry.decide(row.attempts, exc)
        if isinstance(exc, _NOT_RETRYABLE):
            decision = type(decision)(False, 0.0, "not retryable")
        with self.repo.transaction() as tx:
            run = tx.lock_run(row.run_id)
            at = now()
            if run is None:
                return []
            if decision.retry and run.status is RunStatus.RUNNING and run.error is None:
                return self._retry(tx, plan, row, dispatch_id, error, decision.delay, at)
            if not tx.finish(row, dispatch_id, StepStatus.FAILED, at, error=error, traceback=trace):
                return []
            row.status, row.error, row.traceback = StepStatus.FAILED, error, trace
            return self._failed_for_good(tx, plan, run, row, type(exc).__name__, decision.reason, at)

    def _retry(
        self, tx: Tx, plan: Plan, row: StepRow, owner: str, error: str, delay: float, at: datetime
    ) -> list[Dispatch]:
        """Queue the next attempt after ``delay`` seconds, recording the failed one."""
        detail = {"attempt": row.attempts, "error": error, "delay_s": round(delay, 3)}
        wake = at + timedelta(seconds=delay)
        queued = self._queue_again(tx, plan, row, owner, wake, "step.retrying", detail, error=error)
        if queued is None:
            return []
        tx.record_attempt(row, StepStatus.FAILED, error, at)
        return queued

    def _failed_for_good(
        self, tx: Tx, plan: Plan, run: RunRow, row: StepRow, error_type: str, why: str, at: datetime
    ) -> list[Dispatch]:
        """A step that will not be tried again: a dead-letter entry, and the run fails fast."""
        tx.insert_dead_letter(
            {
                "id": str(uuid.uuid4()),
                "run_id": row.run_id,
                "step_run_id": row.id,
                "workflow": plan.workflow.name,
                "step": row.step,
                "item_index": row.item_index if row.is_item else None,
                "task": plan.steps[row.step].task,
                "inputs": row.inputs,
                "error": row.error or error_type,
                "error_type": error_type,
                "traceback": row.traceback,
                "attempts": row.attempts,
                "status": "open",
                "failed_at": at,
            }
        )
        advancer = Advancer(tx, plan, run)
        advancer.event("step.failed", row, {"error": row.error, "why": why, "dead_letter": True})
        return advancer.step_failed(row)

    # Operating on runs

    def advance(self, run_id: str) -> list[Dispatch]:
        """Re-scan a run from the state store (idempotent)."""
        with self.repo.transaction() as tx:
            run = tx.lock_run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            if run.status.terminal:
                return []
            return Advancer(tx, self.plans.get(tx, run.version), run).start()

    def cancel(self, run_id: str) -> list[str]:
        """Cancel a run; returns the dispatch ids of steps that were running, to revoke."""
        with self.repo.transaction() as tx:
            run = tx.lock_run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            if run.status is RunStatus.CANCELLED:
                return []
            if run.status.terminal:
                raise UsageError(f"run {run_id} already ended {run.status}; there is nothing to cancel")
            running_rows = [r for r in _open_rows(tx, run_id) if r.status is StepStatus.RUNNING]
            running = [r.dispatch_id for r in running_rows]
            cancelled = tx.cancel_open(
                run_id, (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING), (), "the run was cancelled"
            )
            at = now()
            for row in running_rows:
                tx.record_attempt(row, StepStatus.CANCELLED, "the run was cancelled", at)
            tx.update_run(run_id, status=RunStatus.CANCELLED, finished_at=at)
            events = [
                {
                    "run_id": run_id,
                    "step": step,
                    "item_index": None if index < 0 else index,
                    "kind": "step.cancelled",
                    "detail": None,
                    "at": at,
                }
                for _, step, index in cancelled
            ]
            events.append(
                {"run_id": run_id, "step": None, "item_index": None, "kind": "run.cancelled", "detail": None, "at": at}
            )
            tx.add_events(events)
        return [d for d in running if d]

    def reconcile(self, stale_after: float, lost_after: float) -> list[Dispatch]:
        """Dispatch again what a lost message or a dead worker left behind."""
        dispatches: list[Dispatch] = []
        with self.repo.transaction() as tx:
            at = now()
            for row in tx.stale_queued(at - timedelta(seconds=stale_after)):
                dispatches.extend(self._requeue(tx, row, "step.redispatched", "its message was not taken"))
            for row in tx.due_deferred(at):
                dispatches.extend(self._requeue(tx, row, "step.woken", "its retry delay has passed"))
        with self.repo.transaction() as tx:
            at = now()
            for candidate in tx.running_since(at - timedelta(seconds=lost_after)):
                if not self._owner_lost(tx, candidate.worker):
                    continue
                run = tx.lock_run(candidate.run_id)
                lost = tx.step_run(candidate.id, lock=True)
                if (
                    run is None
                    or lost is None
                    or lost.status is not StepStatus.RUNNING
                    or lost.worker != candidate.worker
                ):
                    continue
                poisoned = self._poisoned(tx, run, lost, at)
                if poisoned is None:
                    dispatches.extend(self._requeue(tx, lost, "step.redispatched", f"worker {lost.worker} was lost"))
                else:
                    dispatches.extend(poisoned)
        return dispatches

    def _requeue(self, tx: Tx, row: StepRow, kind: str, why: str) -> list[Dispatch]:
        dispatch_id = new_dispatch_id()
        at = now()
        tx.update_step(row.id, status=StepStatus.QUEUED, dispatch_id=dispatch_id, queued_at=at, not_before=None)
        tx.add_events([event_row(row, kind, {"why": why}, at)])
        timeout = self._plan_of_run(tx, row.run_id).steps[row.step].timeout
        return [Dispatch(row.id, dispatch_id, timeout=timeout)]

    def heartbeat(self) -> None:
        """Say this host's workers are alive (owners on other hosts are judged by this)."""
        with self.repo.transaction() as tx:
            tx.heartbeat(socket.gethostname(), now())


def check_inputs(workflow: Workflow, inputs: Any) -> None:
    """Inputs must be a JSON object that the workflow's inputs schema accepts (exit 2 if not)."""
    if not isinstance(inputs, dict):
        raise InputsError(f"inputs must be an object, not {type(inputs).__name__}")
    try:
        json.dumps(inputs)
    except (TypeError, ValueError) as exc:
        raise InputsError(f"inputs are not JSON: {exc}") from None
    if workflow.inputs is None:
        return
    validator = validator_for(workflow.inputs, default=Draft202012Validator)(workflow.inputs)
    error = best_match(validator.iter_errors(inputs))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        raise InputsError(f"inputs{'.' + where if where else ''}: {message} (workflow {workflow.name})")


def to_json(value: Any) -> Any:
    """The value as stored: JSON data, or OutputNotSerialisable (never retried)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OutputNotSerialisable(
            f"the step returned {type(value).__name__}, which is not JSON-serialisable: {exc}"
        ) from None


def resolve_function(task: str) -> Callable[..., Any]:
    """``module:function`` to the function; other names need the worker layer's registry."""
    import importlib

    if ":" not in task:
        raise TaskNotFound(f"task '{task}' is not 'module:function' and no task registry is available")
    module_name, _, attr = task.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotFound(f"task '{task}': cannot import '{module_name}': {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TaskNotFound(f"task '{task}': module '{module_name}' has no '{attr}'")
    if not callable(target):
        raise TaskNotFound(f"task '{task}' is not callable")
    return target


def _open_rows(tx: Tx, run_id: str) -> list[StepRow]:
    rows = list(tx.steps(run_id).values()) + tx.items(run_id)
    return [r for r in rows if not r.status.terminal]


class BreakerUnavailable(CircuitOpenError):
    """No call was made through the breaker; the step comes back at ``retry_at``."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class StepTimeout(TimeoutError):
    """The attempt ran past its timeout."""


def _as_timeout(exc: Exception, timeout: float | None) -> Exception:
    """Celery's soft time limit, seen as what it means to a retry policy: a TimeoutError."""
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        limit = f"its {timeout:g}s timeout" if timeout else "its time limit"
        return StepTimeout(f"the attempt ran past {limit}")
    return exc


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _heartbeat_grace() -> float:
    from orchestrator.settings import get_settings

    return get_settings().reconcile_stale_s


__all__ = ["Runtime", "Submitted", "check_inputs", "resolve_function", "to_json"]
