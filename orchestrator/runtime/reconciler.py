"""The reconciler: finds what a lost worker, a lost message or a missed wake-up left behind, and
fires the timers and deadlines of waiting steps that came due while nobody was there.

Idempotent, and safe with any number running at once: each step is taken with a compare-and-set on
its dispatch token, or under its run's lock (one run per transaction, so reconcilers never lock
runs in two orders). It tells a backlog from a lost message by asking the transport whether the
message is still in the broker, so a busy hour never doubles the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from orchestrator.errors import OrchestratorError
from orchestrator.runtime.children import stop_orphans
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.executor import lose
from orchestrator.runtime.scheduler import Dispatch, label_for, new_dispatch_id
from orchestrator.runtime.waking import wake_due
from orchestrator.settings import DEFAULT_UNKNOWN_BROKER_REDISPATCH_S, DEFAULT_WORKER_FORGET_S
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import StepRow, Tx, now
from orchestrator.store.rows import event_row

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    lapsed: int = 0
    woken: int = 0
    waits: int = 0
    lost: int = 0
    stuck: int = 0
    orphans: int = 0
    dispatches: list[Dispatch] = field(default_factory=list)


def reconcile(engine: Engine) -> Reconciled:
    """One pass: lapsed leases, due wake-ups and waits, lost messages, stuck runs, orphaned child
    runs. Sends what it decided."""
    done = Reconciled()
    for part in (_lapsed_leases, _due_wake_ups, _due_waits, _lost_messages, _stuck_runs, _orphans):
        try:
            part(engine, done)
        except OrchestratorError as exc:  # the store is down, a run's data is broken: the other parts go on
            log.warning("reconciling (%s) failed: %s", part.__name__.strip("_"), exc.message)
    engine.send(done.dispatches)
    with engine.repo.transaction() as tx:
        tx.prune_workers(DEFAULT_WORKER_FORGET_S)
        tx.purge_expired_cache(now())  # expired entries are never read again
    return done


def _lapsed_leases(engine: Engine, done: Reconciled) -> None:
    """Running steps whose holder stopped renewing: run again elsewhere, or poisoned."""
    with engine.repo.transaction() as tx:
        candidates = tx.lapsed_leases()
    for candidate in candidates:
        with engine.repo.transaction() as tx:
            run = tx.lock_run(candidate.run_id)
            row = tx.step_run(candidate.id, lock=True)
            if run is None or row is None or row.status is not StepStatus.RUNNING or not tx.lease_lapsed(row.id):
                continue
            plan = engine.plans.get(tx, run.version)
            cause = row.error or f"the lease of worker {row.worker} lapsed"
            failed = lose(engine, tx, plan, run, row)
            if failed is not None:
                done.dispatches += failed
                done.lapsed += 1
                continue
            at, token = now(), new_dispatch_id()
            tx.update_step(
                row.id,
                status=StepStatus.QUEUED,
                dispatch_id=token,
                queued_at=at,
                not_before=None,
                lease_expires_at=None,
            )
            tx.add_events([event_row(row, "step.redispatched", {"why": cause}, at)])
            done.dispatches.append(
                Dispatch(row.id, token, timeout=plan.steps[row.step].timeout, label=label_for(plan, row))
            )
            done.lapsed += 1


def _due_wake_ups(engine: Engine, done: Reconciled) -> None:
    """Waits held in the database (long retry delays, unsent messages) whose time has come."""
    with engine.repo.transaction() as tx:
        at = now()
        for row in tx.due_deferred(at):
            token = new_dispatch_id()
            if tx.redispatch(row.id, None, token, at):
                tx.add_events([event_row(row, "step.woken", {"why": "its wait is over"}, at)])
                done.dispatches.append(_dispatch(engine, tx, row, token))
                done.woken += 1


def _due_waits(engine: Engine, done: Reconciled) -> None:
    """Waiting steps whose timer or deadline came while no wake-up message was due, or whose
    signal's sender died before completing them."""
    due, found = wake_due(engine)
    done.waits += due
    done.dispatches += found


def _lost_messages(engine: Engine, done: Reconciled) -> None:
    """Queued steps whose message no worker took in time: sent again only if the broker lost it."""
    at = now()
    with engine.repo.transaction() as tx:
        candidates = tx.stale_queued(at - timedelta(seconds=engine.timing.stale_s))
    if not candidates:
        return
    lost = engine.transport.lost(candidates)
    if lost is None:  # the broker cannot tell: only what has waited very long, once per period
        limit = at - timedelta(seconds=DEFAULT_UNKNOWN_BROKER_REDISPATCH_S)
        lost = {r.dispatch_id for r in candidates if r.dispatch_id and (r.not_before or r.queued_at or at) < limit}
    with engine.repo.transaction() as tx:
        for row in candidates:
            if row.dispatch_id not in lost:
                continue
            token = new_dispatch_id()
            if tx.redispatch(row.id, row.dispatch_id, token, at):
                tx.add_events([event_row(row, "step.redispatched", {"why": "its message was lost"}, at)])
                done.dispatches.append(_dispatch(engine, tx, row, token))
                done.lost += 1


def _stuck_runs(engine: Engine, done: Reconciled) -> None:
    """Running runs with nothing in flight are re-scanned: every run ends."""
    with engine.repo.transaction() as tx:
        stuck = tx.stuck_runs()
    for run_id in stuck:
        with engine.repo.transaction() as tx:
            run = tx.lock_run(run_id)
            if run is None or run.status is not RunStatus.RUNNING:
                continue
            advancer = engine.advancer(tx, engine.plans.get(tx, run.version), run)
            advancer.event("run.rescanned", detail={"why": "nothing was in flight"})
            found = advancer.start()
            log.warning(
                "run %s had nothing in flight; re-scanned: %d step(s) sent, now %s", run_id, len(found), run.status
            )
            done.dispatches += found
            done.stuck += 1


def _orphans(engine: Engine, done: Reconciled) -> None:
    """Child runs still open whose parent step no longer waits on them are cancelled."""
    done.orphans += stop_orphans(engine)


def _dispatch(engine: Engine, tx: Tx, row: StepRow, token: str) -> Dispatch:
    plan = engine.plans.of_run(tx, row.run_id)
    return Dispatch(row.id, token, timeout=plan.steps[row.step].timeout, label=label_for(plan, row))
