"""What people and other services do to runs: submit, cancel, re-scan, reopen after a failure.

The CLI, the Celery tasks and the Python client are thin doors onto these. Each operation decides
in one transaction, then hands its messages to the transport (and revokes what it stopped).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from orchestrator import audit
from orchestrator.definition import Plan, Workflow
from orchestrator.definition.model import split_ref
from orchestrator.errors import NotFound, Refused, UsageError, shown
from orchestrator.runtime.checks import check_inputs, check_payload, schema_problem
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.scheduler import (
    FAIL_FAST_REASON,
    ITEMS_CANCELLED,
    RUN_CANCELLED,
    Dispatch,
    Label,
    new_dispatch_id,
    stop,
)
from orchestrator.settings import DEFAULT_SERVICE_ACTOR
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import STEP_ROW, Ended, RunRow, Tx, now

if TYPE_CHECKING:
    from orchestrator.runtime.versions import Registered


@dataclass(frozen=True)
class Who:
    """Who does something, and why: recorded with the event it causes and in the audit trail."""

    by: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.by, str) or not self.by or len(self.by) > 200 or "\x00" in self.by:
            raise UsageError("--by must name someone in 1 to 200 characters (no NUL)")
        if self.reason is not None and (
            not isinstance(self.reason, str) or len(self.reason) > 2000 or "\x00" in self.reason
        ):
            raise UsageError("--reason must be at most 2000 characters (no NUL)", {"--reason": "reason"})

    def detail(self, **more: Any) -> dict[str, Any]:
        found = {"by": self.by, **more}
        if self.reason:
            found["reason"] = self.reason
        return found


def service(actor: str | None = None, reason: str | None = None) -> Who:
    """Another service acting (a client call, a Celery message): the name it passes, else
    ``ORCHESTRATOR_ACTOR``, else ``service``."""
    from orchestrator.settings import get_settings

    return Who(actor or get_settings().actor or DEFAULT_SERVICE_ACTOR, reason)


def open_run(tx: Tx, run_id: str) -> RunRow:
    """The run, locked; NotFound (exit 2) naming it when there is none."""
    run = tx.lock_run(run_id)
    if run is None:
        raise NotFound(f"no run {shown(run_id)} (orchestrator runs lists them)")
    return run


@dataclass(frozen=True)
class Submitted:
    run_id: str
    created: bool
    dispatches: list[Dispatch]


def submit(
    engine: Engine,
    plan: Plan,
    inputs: Any,
    idempotency_key: str | None = None,
    who: Who | None = None,
    via: str = "client",
) -> Submitted:
    """Start a run of ``plan``; the same idempotency key gives back the same run (and records
    nothing new). ``via``: the door it came through (cli, client, celery, schedule), for the
    audit record; ``who`` defaults to the service actor."""
    who = who or Who(DEFAULT_SERVICE_ACTOR)
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= 200):
        raise UsageError("an idempotency key is a string of 1 to 200 characters")
    check_inputs(plan.workflow, inputs)
    engine.check_plan(plan)
    try:
        with engine.repo.transaction() as tx:
            if idempotency_key is not None:
                existing = tx.run_for_key(idempotency_key)
                if existing is not None:
                    return Submitted(existing, False, [])
            run_id = str(uuid.uuid4())
            tx.save_definition(plan.version, plan.workflow.name, plan.workflow.snapshot())
            needs = plan.first_rows()
            tx.insert_run(run_id, plan.workflow.name, plan.version, inputs, idempotency_key, needs)
            run = tx.lock_run(run_id)
            assert run is not None
            dispatches = engine.advancer(tx, plan, run).start()
            detail = {"workflow": plan.workflow.name, "version": plan.version, "via": via}
            if idempotency_key is not None:
                detail["idempotency_key"] = idempotency_key
            audit.record(tx, who, "run.submit", f"run:{run_id}", detail)
    except sa.exc.IntegrityError:
        if idempotency_key is None:
            raise
        with engine.repo.transaction() as tx:
            found = tx.run_for_key(idempotency_key)
        if found is None:
            raise
        return Submitted(found, False, [])
    engine.send(dispatches)
    return Submitted(run_id, True, dispatches)


def registered_plan(engine: Engine, target: str) -> Plan:
    """The plan a run of ``NAME`` (its active version) or ``NAME@VERSION`` (that version, or a
    unique prefix of it) starts on."""
    from orchestrator.runtime.versions import resolve_target

    with engine.repo.transaction() as tx:
        return engine.plans.get(tx, resolve_target(tx, target))


def register(engine: Engine, plan: Plan, who: Who | None = None, activate: bool = True) -> Registered:
    """Store ``plan`` as a version of its workflow, active unless ``activate`` is False (see
    ``orchestrator.runtime.versions``)."""
    from orchestrator.runtime import versions

    return versions.register(engine, plan, who, activate)


def activated(tx: Tx, plan: Plan) -> None:
    """``plan`` became its workflow's active version: what starts runs by itself (its ``on``
    entries, its schedules) is now this version's, replacing the previous one's."""
    entries = [(t.index, *t.on.source) for t in plan.triggers]
    tx.subscribe(plan.workflow.name, plan.version, entries)
    specs = [
        {
            "name": s.name,
            "cron": s.spec.cron,
            "every_s": s.spec.every_s,
            "timezone": s.spec.timezone,
            "catchup": s.schedule.catchup,
            "overlap": s.schedule.overlap,
        }
        for s in plan.schedules
    ]
    tx.replace_schedules(plan.workflow.name, plan.version, specs, tx.store_time())


def called_workflows(tx: Tx, workflow: Workflow) -> dict[str, Workflow]:
    """The registered workflows ``workflow`` calls, directly or through others (by static name)."""
    found: dict[str, Workflow] = {}
    frontier = [workflow]
    while frontier:
        for step in frontier.pop().nodes.values():
            name, pinned = split_ref(step.workflow) if step.workflow else (None, None)
            if name is None or name in found:
                continue
            matches = tx.versions_like(name, pinned.lower()) if pinned else []
            version = matches[0] if len(matches) == 1 else None if pinned else tx.active_version(name)
            snapshot = tx.definition(version) if version else None
            if snapshot is not None:
                found[name] = Workflow.model_validate(snapshot)
                frontier.append(found[name])
    return found


def advance(engine: Engine, run_id: str) -> list[Dispatch]:
    """Re-scan a run from the state store (idempotent), and send what is ready."""
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        if run.status.terminal:
            return []
        dispatches = engine.advancer(tx, engine.plans.get(tx, run.version), run).start()
    engine.send(dispatches)
    return dispatches


@dataclass
class Cancelled:
    run_id: str
    already: bool = False
    revoked: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)  # child runs cancelled with it, every level
    status: RunStatus = RunStatus.CANCELLED  # running while its compensations undo it

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": str(self.status), "already": self.already, "revoked": self.revoked}


def cancel(engine: Engine, run_id: str, who: Who | None = None, reason: str = RUN_CANCELLED) -> Cancelled:
    """No new step starts; running steps are revoked; the run ends cancelled, and so do its child
    runs, every level down, in the same transaction. Set-based: a step claimed while this runs is
    caught by the second statement, never cancelled while it runs unseen. Audited when ``who``
    is given: the reconciler stopping an orphaned child run is the engine's own doing, an event."""
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        if run.status is RunStatus.CANCELLED or undoing_a_cancel(run):
            return Cancelled(run_id, already=True, status=run.status)
        if run.status.terminal:
            raise Refused(f"run {run_id} already ended {run.status}; there is nothing to cancel")
        family = lock_family(tx, run)
        at, executing, dispatches = now(), [], []
        for member in family:
            if undoing_a_cancel(member):
                continue  # cancelled already: it ends once its compensations ran
            cause = reason if member is run else f"its parent run {member.parent_run_id} was cancelled"
            ended, sent = _cancel_locked(engine, tx, member, at, who if member is run else None, cause)
            executing += ended
            dispatches += [d for d in sent if d.stop_run not in {m.id for m in family}]
        children = [m.id for m in family if m is not run]
        if who is not None:
            audit.record(tx, who, "run.cancel", f"run:{run_id}", {"children": children} if children else None)
    revoked = [e.dispatch_id for e in executing if e.dispatch_id]
    if revoked:
        engine.transport.revoke(revoked)
    engine.send(dispatches)
    return Cancelled(run_id, revoked=revoked, children=children, status=run.status)


def undoing_a_cancel(run: RunRow) -> bool:
    """A run that was cancelled and runs its compensations before it ends cancelled."""
    undo = run.compensation
    return isinstance(undo, dict) and undo.get("on") == "cancel" and not run.status.terminal


def lock_family(tx: Tx, run: RunRow) -> list[RunRow]:
    """``run`` (locked by the caller) and every open run below it, locked parents first: the order
    every writer takes run locks in, before any step row of theirs is written."""
    family = [run]
    for child_id in tx.open_descendants(run.id):
        child = tx.lock_run(child_id)
        if child is not None and not child.status.terminal:
            family.append(child)
    return family


def _cancel_locked(
    engine: Engine, tx: Tx, run: RunRow, at: Any, who: Who | None, reason: str
) -> tuple[list[Ended], list[Dispatch]]:
    """Cancel one locked run: its rows, its attempts in flight, its events, the runs its end
    starts. Returns the executing rows (to revoke) and what to do after commit: wake its parent's
    step, stop children it waited on, send the started runs' messages."""
    idle = (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.WAITING)
    waiting = tx.cancel_where(run.id, idle, reason, at=at)
    running = tx.cancel_where(run.id, (StepStatus.RUNNING,), reason, at=at)
    executing = [e for e in running if e.worker is not None]
    tx.record_ended_attempts(executing, StepStatus.CANCELLED, reason, at)
    cause = {"reason": reason}
    events = [run_event(run.id, e.step, e.item_index, "step.cancelled", cause, at) for e in [*waiting, *running]]
    detail = who.detail() if who else ({"reason": reason} if reason != RUN_CANCELLED else None)
    events.append(run_event(run.id, None, None, "run.cancelled", detail, at))
    after = [stop(e.wait_key) for e in waiting if e.wait_kind == "workflow" and e.wait_key]
    plan = engine.plans.get(tx, run.version)
    if _undoes_on_cancel(tx, plan, run):  # it ends cancelled once its compensations have run
        run.status, run.error, run.compensation = RunStatus.RUNNING, reason, {"on": "cancel"}
        tx.update_run(run.id, status=run.status, error=reason, compensation=run.compensation)
        tx.add_events(events)
        return executing, after + engine.advancer(tx, plan, run).start()
    tx.update_run(run.id, status=RunStatus.CANCELLED, finished_at=at)
    if run.parent_step_run_id is not None and tx.child_ended(run.parent_step_run_id, run.id, at):
        after.append(Dispatch(run.parent_step_run_id, "", wake=True, local=True))
    run.status = RunStatus.CANCELLED
    chained, chain_events = engine.after_run(tx, run)
    tx.add_events(events + chain_events)
    return executing, after + chained


def _undoes_on_cancel(tx: Tx, plan: Plan, run: RunRow) -> bool:
    if not plan.workflow.compensate_on_cancel or not plan.compensations:
        return False
    statuses = tx.step_statuses(run.id)
    return any(statuses.get(step) is StepStatus.SUCCEEDED for step in plan.compensations)


@dataclass(frozen=True)
class Reopen:
    """A failed step (or foreach item) to run again, with these inputs (None: evaluate them again)."""

    step_run_id: int
    run_id: str
    step: str
    item_index: int | None
    inputs: Any


def reopen(engine: Engine, tx: Tx, runs: dict[str, RunRow], steps: Sequence[Reopen]) -> list[Dispatch]:
    """Run failed steps again inside ``tx`` (their runs locked by the caller): each goes back to the
    queue (or to pending, to be evaluated again); what the failure ended without running goes back
    too; each run resumes, still failing only if another of its steps still is. Returns the
    messages to send once ``tx`` commits."""
    at = now()
    run_ids = sorted({s.run_id for s in steps})
    reset = tx.reopen_steps_of(run_ids, [FAIL_FAST_REASON], ITEMS_CANCELLED)

    def in_place(s: Reopen) -> bool:  # an item its step's kind starts itself (a child run): back to pending
        sp = engine.plans.get(tx, runs[s.run_id].version).steps[s.step]
        return s.item_index is not None and s.inputs is None and not engine.kinds.of(sp).queues

    queued = [
        (s, new_dispatch_id()) for s in steps if (s.inputs is not None or s.item_index is not None) and not in_place(s)
    ]
    again = [s for s in steps if (s.inputs is None and s.item_index is None) or in_place(s)]
    requeued = tx.requeue_many([(s.step_run_id, s.inputs, token) for s, token in queued], at)
    reevaluated = tx.reopen_failed([s.step_run_id for s in again])
    missing = [s for s in steps if s.step_run_id not in requeued | reevaluated]
    if missing:
        raise UsageError(
            f"step {missing[0].step} of run {missing[0].run_id} has not failed; there is nothing to reopen"
        )
    items: dict[str, set[str]] = {}
    for s in steps:
        if s.item_index is not None:
            items.setdefault(s.run_id, set()).add(s.step)
    for run_id in sorted(items):
        parents = sorted(items[run_id])
        tx.reopen_parents(run_id, parents)
        reset += [(run_id, step, STEP_ROW, str(StepStatus.RUNNING)) for step in parents]
    failing = tx.first_failures(run_ids)
    tx.resume_runs([r for r in run_ids if r not in failing])
    for run_id, (step, error) in failing.items():
        tx.resume_runs([run_id], f"{step}: {error}")
    tx.add_events(_reopen_events(steps, reset, at))
    dispatches = []
    for s, token in queued:
        plan = engine.plans.get(tx, runs[s.run_id].version)
        about = Label(plan.workflow.name, s.step, s.run_id, s.item_index)
        dispatches.append(Dispatch(s.step_run_id, token, timeout=plan.steps[s.step].timeout, label=about))
    rescan = (
        {r for r, _, _, _ in reset} | {s.run_id for s in steps if s.item_index is not None} | {s.run_id for s in again}
    )
    for run_id in sorted(rescan):
        run = tx.run(run_id)
        assert run is not None
        dispatches += engine.advancer(tx, engine.plans.get(tx, run.version), run).start()
    return dispatches


def _reopen_events(
    steps: Sequence[Reopen], reset: Sequence[tuple[str, str, int, str]], at: Any
) -> list[dict[str, Any]]:
    events = [run_event(r, step, index, "step.reopened", {"status": status}, at) for r, step, index, status in reset]
    for s in steps:
        events.append(run_event(s.run_id, None, None, "run.resumed", {"step": s.step}, at))
        if s.inputs is not None or s.item_index is not None:
            events.append(run_event(s.run_id, s.step, s.item_index, "step.replayed", None, at))
        else:
            events.append(run_event(s.run_id, s.step, None, "step.reopened", {"status": "pending"}, at))
    return events


def run_event(
    run_id: str, step: str | None, index: int | None, kind: str, detail: dict[str, Any] | None, at: Any
) -> dict[str, Any]:
    """An event row of the run's history (``index`` is the item's, or none for a step or the run)."""
    item = None if index is None or index == STEP_ROW else index
    return {"run_id": run_id, "step": step, "item_index": item, "kind": kind, "detail": detail, "at": at}


__all__ = [
    "Cancelled",
    "Reopen",
    "Submitted",
    "Who",
    "advance",
    "cancel",
    "check_inputs",
    "called_workflows",
    "check_payload",
    "lock_family",
    "undoing_a_cancel",
    "open_run",
    "register",
    "reopen",
    "run_event",
    "schema_problem",
    "service",
    "submit",
]
