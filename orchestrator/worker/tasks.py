"""The Celery tasks: execute one step, submit a run, advance a run, reconcile.

Each is a thin shell over ``orchestrator.runtime``: the state store decides, the task sends the
resulting constant-size messages after the transaction has committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from celery import group
from kombu.exceptions import OperationalError as KombuOperationalError

from orchestrator.errors import StateStoreError, TaskNotFound
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.runtime.service import Runtime, resolve_function
from orchestrator.settings import DEFAULT_HARD_TIMEOUT_GRACE_S, get_settings
from orchestrator.store import Repository
from orchestrator.worker.app import app

log = logging.getLogger(__name__)
_RUNTIMES: dict[int, Runtime] = {}


def runtime() -> Runtime:
    """This process's runtime (one per process: database engines must not cross a fork)."""
    rt = _RUNTIMES.get(os.getpid())
    if rt is None:
        settings = get_settings()
        repo = Repository.from_url(settings.database_url)
        rt = _RUNTIMES[os.getpid()] = Runtime(
            repo,
            resolve_task,
            poison_limit=settings.poison_limit,
            countdown_limit=settings.countdown_limit,
            breakers=Breakers(repo, settings.broker_url),
        )
    return rt


def resolve_task(name: str) -> Callable[..., Any]:
    """``module:function``, or the name of a Celery task registered on this worker."""
    if ":" in name:
        return resolve_function(name)
    task = app.tasks.get(name)
    if task is None or name.startswith("orchestrator."):
        raise TaskNotFound(
            f"no Celery task named '{name}' is registered on this worker: add its module to ORCHESTRATOR_TASK_MODULES"
        )
    return task


def send(dispatches: Sequence[Dispatch]) -> None:
    """Publish step messages; several at once go out as one Celery group."""
    if not dispatches:
        return
    signatures = [
        execute_step.signature(
            (d.step_run_id, d.dispatch_id),
            task_id=d.dispatch_id,
            countdown=d.countdown or None,
            immutable=True,
            **_time_limits(d.timeout),
        )
        for d in dispatches
    ]
    try:
        if len(signatures) == 1:
            signatures[0].apply_async()
        else:
            group(signatures).apply_async()
    except KombuOperationalError as exc:
        # The steps are recorded as queued; the reconciler dispatches them again.
        log.warning("could not publish %d step message(s): %s; the reconciler will retry", len(signatures), exc)


def _time_limits(timeout: float | None) -> dict[str, float]:
    """A step's timeout as Celery time limits: the soft one raises inside the step (a failed attempt
    that follows the retry policy); the hard one, a little later, kills a step that ignores it."""
    if not timeout:
        return {}
    return {"soft_time_limit": timeout, "time_limit": timeout + DEFAULT_HARD_TIMEOUT_GRACE_S}


@app.task(
    name="orchestrator.execute_step",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(StateStoreError,),
    retry_backoff=True,
    max_retries=None,
)
def execute_step(step_run_id: int, dispatch_id: str) -> None:
    send(runtime().execute(step_run_id, dispatch_id))


@app.task(name="orchestrator.submit", acks_late=True, ignore_result=False)
def submit(workflow: str, inputs: dict[str, Any] | None = None, idempotency_key: str | None = None) -> str:
    """Start a run of a registered workflow; the same idempotency key gives back the same run."""
    rt = runtime()
    submitted = rt.submit(rt.registered_plan(workflow), inputs or {}, idempotency_key)
    send(submitted.dispatches)
    return submitted.run_id


@app.task(name="orchestrator.advance", acks_late=True)
def advance(run_id: str) -> None:
    send(runtime().advance(run_id))


@app.task(name="orchestrator.reconcile")
def reconcile() -> int:
    settings = get_settings()
    dispatches = runtime().reconcile(settings.reconcile_stale_s, settings.reconcile_stale_s)
    send(dispatches)
    return len(dispatches)


from orchestrator.worker import maintenance as _maintenance  # noqa: E402,F401  (connects worker signals)
