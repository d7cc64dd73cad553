"""Signals: an external event, by name and correlation key, completes the steps waiting on it.

One transaction locks the runs waiting on the signal, then the event-and-key lock (which a step
starting to wait on it takes too, so exactly one of the two sees the other), hands the data to
every waiting step and completes each, or keeps the signal in the mailbox when none waits. A step
that began waiting in another run meanwhile is handed the data and left due; the sender then
completes it in a second transaction, or, if it dies first, the reconciler does. A signal is never
lost and never used twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator import audit
from orchestrator.definition.model import EVENT_PATTERN
from orchestrator.errors import EvaluationError, NotFound, OrchestratorError, StateStoreError, UsageError, shown
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.kinds.wait import signal_key
from orchestrator.runtime.operations import Who, check_payload
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.runtime.waking import wake_step
from orchestrator.settings import get_settings
from orchestrator.status import StepStatus
from orchestrator.store import now
from orchestrator.store.rows import event_row

log = logging.getLogger(__name__)
_DEADLOCK_TRIES = 3


@dataclass
class Signalled:
    """What a signal did: the steps it completed (run, step), or that it was kept for later."""

    event: str
    key: str
    delivered: list[tuple[str, str]] = field(default_factory=list)
    kept: bool = False
    duplicate: bool = False  # this signal id was handled before: nothing was done
    dispatches: list[Dispatch] = field(default_factory=list)
    woken: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``signal --json``."""
        delivered = [{"run_id": r, "step": s} for r, s in self.delivered]
        return {
            "event": self.event,
            "key": self.key,
            "delivered": delivered,
            "kept": self.kept,
            "duplicate": self.duplicate,
        }


def signal(
    engine: Engine,
    event: str,
    key: Any = None,
    data: Any = None,
    run_id: str | None = None,
    who: Who | None = None,
    signal_id: str | None = None,
) -> Signalled:
    """Complete every step waiting on ``event`` and ``key`` (only in ``run_id`` when given), or keep
    the signal for a step that waits later (for ``ORCHESTRATOR_SIGNAL_TTL``). The same
    ``signal_id`` a second time does nothing (within that time)."""
    if signal_id is not None and not 0 < len(signal_id) <= 200:
        raise UsageError("a signal id has 1 to 200 characters")
    if not isinstance(event, str) or not re.match(EVENT_PATTERN, event):
        raise UsageError(f"invalid event name {shown(repr(event))}: use letters, digits and . _ : / - (at most 200)")
    check_payload(key, "the signal's key")  # depth and UTF-8 before it is serialised as the key
    try:
        key = signal_key(key)
    except EvaluationError as exc:
        raise UsageError(exc.message) from None
    check_payload(data, "the signal's data")
    who = who or Who(get_settings().default_actor)
    for attempt in range(_DEADLOCK_TRIES):
        try:
            done = _deliver(engine, event, key, data, run_id, who, signal_id)
            break
        except StateStoreError as exc:
            if "deadlock detected" not in exc.message or attempt == _DEADLOCK_TRIES - 1:
                raise
            log.info("signal %s/%s met a deadlock; trying again", event, key)
    for row_id in done.woken:
        try:
            done.dispatches += wake_step(engine, row_id)
        except OrchestratorError as exc:  # the step is due: the reconciler completes it
            log.warning("signal delivered to step %s; completing it failed (%s); it will be retried", row_id, exc)
    engine.send(done.dispatches)
    return done


def _deliver(
    engine: Engine,
    event: str,
    key: str,
    data: Any,
    run_id: str | None,
    who: Who,
    signal_id: str | None,
    inline: bool = True,
) -> Signalled:
    """Hand the data to the waiting steps and complete them, or keep the signal, in one transaction.

    Locks are taken in the order every writer takes them: the runs with a step waiting on the
    signal (in id order), then the event-and-key lock, then step rows. A step that started waiting
    in another run while this waited for the event-and-key lock is handed the data and left due
    (``woken``), for the caller or the reconciler to complete. PostgreSQL may still find a deadlock
    in that corner; the transaction is then rolled back whole and tried again."""
    done = Signalled(event, key)
    completed: set[int] = set()
    with engine.repo.transaction() as tx:
        if run_id is not None and tx.run(run_id) is None:
            raise NotFound(f"no run {run_id} (orchestrator runs lists them)")
        if not tx.is_awaited(event):
            raise UsageError(f"no workflow waits on event '{shown(event)}': check its name (nothing was stored)")
        runs = tx.lock_runs(tx.runs_waiting_on(event, key, run_id)) if inline else {}
        tx.lock_signal(event, key)
        at = now()
        if signal_id is not None and not tx.first_receipt(signal_id, at):
            done.duplicate = True
            return done
        delivered = tx.deliver_signal(event, key, data, at, run_id)
        if delivered:
            detail = who.detail(event=event, key=key)
            tx.add_events([event_row(row, "step.signal", detail, at) for row in delivered])
        else:
            expires = at + timedelta(seconds=get_settings().signal_ttl_s)
            tx.keep_signal(event, key, run_id, data, who.by, at, expires)
            done.kept = True
        for row in delivered:
            run = runs.get(row.run_id)
            if run is None:  # its run was not locked above: completed after commit
                continue
            completed.add(row.id)
            fresh = tx.step_run(row.id)  # completing an earlier step of its run may have ended it (fail-fast)
            if fresh is not None and fresh.status is StepStatus.WAITING and fresh.wake == "signal":
                plan = engine.plans.get(tx, run.version)
                done.dispatches += engine.advancer(tx, plan, run).woken(fresh)
        sent = {"key": key, "delivered": [{"run_id": r.run_id, "step": r.step} for r in delivered], "kept": done.kept}
        extra = {"run_id": run_id} if run_id else {}
        audit.record(tx, who, "signal.send", f"event:{event}", {**sent, **extra, "signal_id": signal_id})
    done.delivered = [(row.run_id, row.step) for row in delivered]
    done.woken = [row.id for row in delivered if row.id not in completed]
    return done
