"""Waking waiting steps: when a timer or deadline is due, a signal came, or people decided.

Whoever wakes a step (a wake-up message, the signal's sender, the reconciler's sweep) does it
under the run's lock and only if the step is still waiting and really due, so a step is woken once
however many of them try at the same moment.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from orchestrator.errors import OrchestratorError
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.settings import DEFAULT_WAIT_SWEEP_LIMIT, get_settings
from orchestrator.status import StepStatus
from orchestrator.store import StepRow, now

log = logging.getLogger(__name__)


def is_due(row: StepRow) -> bool:
    """Woken by a signal or a decision, or its timer, deadline or next attempt has come."""
    if row.status is not StepStatus.WAITING:
        return False
    if row.wake is not None and row.wake != "restart":
        return True
    return row.not_before is not None and row.not_before <= now()


def wake_step(engine: Engine, step_run_id: int) -> list[Dispatch]:
    """Wake one waiting step if it is due (idempotent); the messages this leads to, unsent."""
    with engine.repo.transaction() as tx:
        peek = tx.step_run(step_run_id)
        if peek is None or not is_due(peek):
            return []
        run = tx.lock_run(peek.run_id)  # the run before the step: the order every writer locks in
        row = tx.step_run(step_run_id, lock=True)
        if run is None or run.status.terminal or row is None or not is_due(row):
            return []
        return engine.advancer(tx, engine.plans.get(tx, run.version), run).woken(row)


def wake_due(engine: Engine) -> tuple[int, list[Dispatch]]:
    """The reconciler's sweep: every waiting step whose time has come, one run per transaction;
    how many were due, and the messages their waking led to."""
    at = now()
    with engine.repo.transaction() as tx:
        due = tx.due_waits(at, DEFAULT_WAIT_SWEEP_LIMIT)
        purged = tx.purge_signals(at, at - timedelta(seconds=get_settings().signal_ttl_s))
    if purged:
        log.info("dropped %d expired signal(s) no step took", purged)
    dispatches: list[Dispatch] = []
    for row in due:
        try:
            dispatches += wake_step(engine, row.id)
        except OrchestratorError as exc:  # one step's trouble never stops the others' wake-ups
            log.warning("waking step %s failed (%s); trying again next pass", row.id, exc.message)
    return len(due), dispatches
