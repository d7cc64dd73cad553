"""The Celery tasks: execute one step, submit a run, signal waiting steps, emit an event, wake a due one,
advance a run, reconcile.

Each is a thin shell over ``orchestrator.runtime``: the state store decides, and the engine's
transport sends the resulting constant-size messages after the transaction has committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from celery import Task, signals

from orchestrator.definition.allowlist import Allowlist
from orchestrator.errors import StateStoreError, TaskNotAllowed, TaskNotFound
from orchestrator.runtime import operations
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.emit import emit as emit_event
from orchestrator.runtime.engine import Engine, Timing
from orchestrator.runtime.executor import Executor, resolve_function
from orchestrator.runtime.reconciler import reconcile as reconcile_once
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.runtime.signal import signal as signal_steps
from orchestrator.runtime.waking import wake_step
from orchestrator.settings import DEFAULT_SERVICE_ACTOR, Settings, get_settings
from orchestrator.store import Repository, now
from orchestrator.worker.app import app
from orchestrator.worker.guard import GuardedTask
from orchestrator.worker.transport import CeleryTransport

log = logging.getLogger(__name__)
_ENGINES: dict[int, Engine] = {}


def engine() -> Engine:
    """This process's engine (one per process: database engines and leases must not cross a fork)."""
    found = _ENGINES.get(os.getpid())
    if found is None:
        found = _ENGINES[os.getpid()] = build_engine(get_settings())
    return found


def build_engine(settings: Settings, repo: Repository | None = None) -> Engine:
    repo = repo or Repository.from_url(settings.database_url)
    timing = Timing(
        lease_s=settings.lease_s,
        countdown_limit=settings.countdown_limit,
        stale_s=settings.reconcile_stale_s,
        poison_limit=settings.poison_limit,
        local_steps=settings.local_steps,
        local_budget_s=settings.local_budget_s,
    )
    transport = CeleryTransport(app, unsent=lambda dispatches: _hold_unsent(repo, dispatches))
    return Engine.create(repo, transport, resolve_task, timing=timing, breakers=Breakers(repo, settings.broker_url))


def _hold_unsent(repo: Repository, dispatches: Sequence[Dispatch]) -> None:
    with repo.transaction() as tx:
        tx.unsend([(d.step_run_id, d.dispatch_id) for d in dispatches], now())


def resolve_task(name: str) -> Callable[..., Any]:
    """``module:function``, or the name of a Celery task registered on this worker from an allowed
    module (never one of the orchestrator's own tasks: a workflow must not submit or execute steps)."""
    allowlist = Allowlist.current()
    if ":" in name:
        return resolve_function(name, allowlist)
    refusal = allowlist.refusal(name)
    if refusal is not None:
        raise TaskNotAllowed(refusal)
    task = app.tasks.get(name)
    if task is None:
        raise TaskNotFound(
            f"no Celery task named '{name}' is registered on this worker: add its module to ORCHESTRATOR_TASK_MODULES"
        )
    refusal = allowlist.target_refusal(name, task)
    if refusal is not None:
        raise TaskNotAllowed(refusal)
    return task


def send(dispatches: Sequence[Dispatch]) -> None:
    engine().send(dispatches)


@app.task(
    base=GuardedTask,
    name="orchestrator.execute_step",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(StateStoreError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def execute_step(self: Task, step_run_id: int, dispatch_id: str) -> None:
    found = engine()
    found.send(Executor(found).execute(step_run_id, dispatch_id, may_continue=_untimed(self)))


def _untimed(task: Task) -> bool:
    """Whether this delivery runs under no Celery time limit (its message's, the task's or the
    app's): only then may it go on to run the next step in-process, since a limit is per message."""
    conf = task.app.conf
    limits = (*(task.request.timelimit or ()), task.time_limit, task.soft_time_limit)
    return not any(limits) and not conf.task_time_limit and not conf.task_soft_time_limit


@app.task(base=GuardedTask, name="orchestrator.submit", bind=True, acks_late=True, ignore_result=False)
def submit(
    self: Task,
    workflow: str,
    inputs: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """Start a run of a registered workflow; the same idempotency key gives back the same run.
    Without a key, the message's own id is the key: a redelivered message starts no second run.
    ``actor``: the sending service's name in the audit trail (default ``service``)."""
    found = engine()
    key = idempotency_key if idempotency_key is not None else f"celery-task:{self.request.id}"
    plan = operations.registered_plan(found, workflow)
    return operations.submit(found, plan, inputs or {}, key, _sender(actor, None, reason), via="celery").run_id


@app.task(base=GuardedTask, name="orchestrator.wake", acks_late=True, ignore_result=True)
def wake(step_run_id: int) -> None:
    """A waiting step's timer or deadline is due (a no-op if something already woke it)."""
    found = engine()
    found.send(wake_step(found, step_run_id))


@app.task(base=GuardedTask, name="orchestrator.signal", bind=True, acks_late=True, ignore_result=False)
def signal(
    self: Task,
    event: str,
    key: Any = None,
    run_id: str | None = None,
    data: Any = None,
    by: str | None = None,
    signal_id: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> int:
    """Complete the steps waiting on ``event`` and ``key``; how many (0: kept for a later wait).
    Without a ``signal_id`` the message's own id is the signal's: a redelivered message does nothing."""
    who = _sender(actor, by, reason)
    signal_id = signal_id if signal_id is not None else f"celery-task:{self.request.id}"
    return len(signal_steps(engine(), event, key, data, run_id, who, signal_id).delivered)


@app.task(base=GuardedTask, name="orchestrator.emit", bind=True, acks_late=True, ignore_result=False)
def emit(
    self: Task,
    event: str,
    data: Any = None,
    by: str | None = None,
    emit_id: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> list[str]:
    """Start the workflows whose ``on`` names ``event``; the ids of the runs started. Without an
    ``emit_id`` the message's own id is the emission's: a redelivered message starts nothing new."""
    emit_id = emit_id if emit_id is not None else f"celery-task:{self.request.id}"
    done = emit_event(engine(), event, data, _sender(actor, by, reason), emit_id)
    return [run_id for _, run_id in done.started]


def _sender(actor: str | None, by: str | None, reason: str | None) -> operations.Who:
    """The service that sent a message: its ``actor`` kwarg (``by``, the older name), else ``service``
    (never the worker's own ORCHESTRATOR_ACTOR: the worker is not who asked)."""
    return operations.Who(actor or by or DEFAULT_SERVICE_ACTOR, reason)


@app.task(base=GuardedTask, name="orchestrator.advance", acks_late=True)
def advance(run_id: str) -> None:
    operations.advance(engine(), run_id)


@app.task(base=GuardedTask, name="orchestrator.reconcile")
def reconcile() -> int:
    return len(reconcile_once(engine()).dispatches)


@signals.worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    """A prefork child gets its worker id now, not on its first step (which would start late)."""
    found = engine()
    assert found.lease is not None
    try:
        found.lease.holder()
    except StateStoreError as exc:  # the first claim registers instead
        log.warning("could not register this worker process yet: %s", exc.message)


from orchestrator.worker import maintenance as _maintenance  # noqa: E402,F401  (connects worker signals)
