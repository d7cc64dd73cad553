"""Schedules at run time: what beat does at each look (fire the due ticks, exactly once), and what
people do to a schedule (pause, resume, trigger now).

Each tick is dealt with in one transaction that locks the schedule's row, claims the tick's
(schedule, fire time) row and starts its run, so a second beat process, a restart or a clock step
starts nothing twice: the second claim finds the first and does nothing. A run a schedule starts
is a run of the workflow's active version, with its inputs checked against the inputs schema, and
``started_by`` naming the schedule and the tick (or the person, for a manual trigger).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator import audit
from orchestrator.definition.plan import Plan, SchedulePlan
from orchestrator.errors import EvaluationError, InputsError, NotFound, OrchestratorError, UsageError, shown
from orchestrator.runtime.chaining import bounded_key, start_run
from orchestrator.runtime.checks import check_inputs
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who, cancel
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.schedule.arithmetic import Due, Spec, due
from orchestrator.settings import DEFAULT_SCHEDULE_FIRES_KEPT_S, get_settings
from orchestrator.store import Repository, Tx
from orchestrator.store.schedules import ScheduleRow

log = logging.getLogger(__name__)
NEXT_SHOWN = 3


@dataclass
class Look:
    """What one look at the schedules did: each tick dealt with, as (schedule, fire time,
    outcome, run id or None, detail)."""

    ticks: list[tuple[str, datetime, str, str | None, str | None]] = field(default_factory=list)

    @property
    def started(self) -> list[tuple[str, datetime, str]]:
        return [(name, at, run) for name, at, outcome, run, _ in self.ticks if outcome == "started" and run]


def split_name(full_name: str) -> tuple[str, str]:
    """``workflow/name`` -> (workflow, name); UsageError for anything else."""
    workflow, slash, name = full_name.partition("/")
    if not slash or not workflow or not name or "/" in name:
        raise UsageError(f"'{full_name}' is not a schedule name: use WORKFLOW/NAME (orchestrator schedules list)")
    return workflow, name


def fire_due(
    engine: Engine, at: datetime | None = None, grace_s: float | None = None, cache: dict[Any, datetime] | None = None
) -> Look:
    """Look at every schedule once, at ``at`` (default: now on the store's clock, so beats on
    hosts whose clocks differ agree): fire the ticks due, start the buffered tick whose run before
    has ended. A schedule that fails (its definition, the store) is logged and left for the next
    look; the others go on. ``cache`` (kept by beat across looks) holds each schedule's next tick,
    so a look at a schedule with nothing due costs no cron arithmetic."""
    grace = get_settings().schedule_grace_s if grace_s is None else grace_s
    with engine.repo.transaction() as tx:
        at = at or tx.store_time()
        rows = tx.schedules()
    look = Look()
    for row in rows:
        if row.paused:
            continue
        state = (row.workflow, row.name, row.version, row.active_since, row.last_fire_at, row.pending_fire_at)
        if cache is not None and state in cache and cache[state] > at:
            continue
        try:
            if cache is not None and row.pending_fire_at is None:
                cache[state] = _spec(row).next_after(max(row.last_fire_at or row.active_since, row.active_since))
            look.ticks += _look_at_row(engine, row, at, grace)
        except OrchestratorError as exc:
            log.warning("schedule %s: not fired this time: %s", row.full_name, exc.message)
        except Exception:  # one schedule's failure must not stop the others (nor beat)
            log.exception("schedule %s: not fired this time", row.full_name)
    if cache is not None and len(cache) > 10 * len(rows) + 100:  # forget the states of the past
        cache.clear()
    return look


def _look_at_row(engine: Engine, row: ScheduleRow, at: datetime, grace: float) -> list[Any]:
    owed = _due(row, at, grace)
    if owed.latest is None and row.pending_fire_at is None:
        return []
    if owed.fire and row.overlap == "cancel_other":
        _cancel_previous(engine, row)
    return _look_at(engine, row.workflow, row.name, at, grace)


def _due(row: ScheduleRow, at: datetime, grace: float) -> Due:
    after = max(row.last_fire_at or row.active_since, row.active_since)
    return due(_spec(row), after, at, row.catchup, grace)


def _spec(row: ScheduleRow) -> Spec:
    return Spec(row.cron, row.every_s, row.timezone)


def _cancel_previous(engine: Engine, row: ScheduleRow) -> None:
    """cancel_other: the run the schedule started before is cancelled before the new one starts
    (a second beat doing it too finds it cancelled already)."""
    if row.last_run_id is None or not _active(engine.repo, row.last_run_id):
        return
    try:
        who = Who(f"schedule:{row.full_name}"[:200])
        cancel(engine, row.last_run_id, who, "cancelled by the schedule's next tick (overlap: cancel_other)")
    except UsageError as exc:  # it ended meanwhile
        log.info("schedule %s: the run before was not cancelled: %s", row.full_name, exc.message)


def _active(repo: Repository, run_id: str) -> bool:
    with repo.transaction() as tx:
        run = tx.run(run_id)
    return run is not None and not run.status.terminal


def _look_at(engine: Engine, workflow: str, name: str, at: datetime, grace: float) -> list[Any]:
    dispatches: list[Dispatch] = []
    with engine.repo.transaction() as tx:
        row = tx.lock_schedule(workflow, name)
        if row is None or row.paused:
            return []
        found = _schedule_plan(engine, tx, row)
        if found is None:
            return []
        plan, sp = found
        ticker = _Ticker(engine, tx, row, plan, sp, at)
        ticker.start_buffered()
        owed = _due(row, at, grace)
        for fire_at in owed.fire:
            ticker.tick(fire_at)
        ticker.finish(owed)
        dispatches = ticker.dispatches
    engine.send(dispatches)
    return ticker.ticks


def _schedule_plan(engine: Engine, tx: Tx, row: ScheduleRow) -> tuple[Plan, SchedulePlan] | None:
    """The active version's plan and its schedule of this name: runs start on the active version."""
    version = tx.active_version(row.workflow)
    if version is None:
        return None
    plan = engine.plans.get(tx, version)
    sp = next((s for s in plan.schedules if s.name == row.name), None)
    return None if sp is None else (plan, sp)


class _Ticker:
    """One schedule's ticks within one transaction (its row locked): each decided against the
    overlap policy and the run the schedule started before."""

    def __init__(self, engine: Engine, tx: Tx, row: ScheduleRow, plan: Plan, sp: SchedulePlan, at: datetime) -> None:
        self.engine, self.tx, self.row, self.plan, self.sp, self.at = engine, tx, row, plan, sp, at
        self.dispatches: list[Dispatch] = []
        self.ticks: list[tuple[str, datetime, str, str | None, str | None]] = []
        self.warning: str | None = None
        run = tx.run(row.last_run_id) if row.last_run_id else None
        self.previous_active = run is not None and not run.status.terminal

    def start_buffered(self) -> None:
        """buffer_one: the tick kept while the run before was active starts once that run ended
        (at the first look after its end: within ORCHESTRATOR_BEAT_POLL_S)."""
        pending = self.row.pending_fire_at
        if pending is None or self.previous_active:
            return
        self.row.pending_fire_at = None
        outcome, run_id, detail = self._start(pending)
        self.tx.update_fire(self.row.workflow, self.row.name, pending, outcome=outcome, run_id=run_id, detail=detail)
        self.ticks.append((self.row.full_name, pending, outcome, run_id, detail))

    def tick(self, fire_at: datetime) -> None:
        row = self.row
        outcome, run_id, detail = "started", None, None
        if self.previous_active and row.overlap == "skip":
            outcome, detail = "skipped", f"run {row.last_run_id} is still active (overlap: skip)"
        elif self.previous_active and row.overlap == "buffer_one":
            if row.pending_fire_at is None:
                outcome, detail = "buffered", f"waits for run {row.last_run_id} to end (overlap: buffer_one)"
            else:
                outcome, detail = "skipped", "a tick is buffered already (overlap: buffer_one)"
        if not self.tx.claim_fire(row.workflow, row.name, fire_at, "scheduled", "claimed", self.at):
            return  # another beat dealt with this tick
        if outcome == "started":
            outcome, run_id, detail = self._start(fire_at)
        elif outcome == "buffered":
            row.pending_fire_at = fire_at
        self.tx.update_fire(row.workflow, row.name, fire_at, outcome=outcome, run_id=run_id, detail=detail)
        self.ticks.append((row.full_name, fire_at, outcome, run_id, detail))
        log.info(
            "schedule %s: tick %s %s%s", row.full_name, fire_at.isoformat(), outcome, f" ({detail})" if detail else ""
        )

    def _start(self, fire_at: datetime) -> tuple[str, str | None, str | None]:
        row = self.row
        try:
            inputs = render_inputs(self.sp, row.workflow, fire_at, manual=False)
            check_inputs(self.plan.workflow, inputs)
        except (EvaluationError, InputsError) as exc:
            self.warning = f"tick {fire_at.isoformat()} started no run: {exc.message}"
            log.warning("schedule %s: %s", row.full_name, self.warning)
            return "invalid", None, exc.message
        run_id = str(uuid.uuid4())
        key = bounded_key(f"schedule:{row.full_name}@{fire_at.isoformat()}", "schedule")
        started_by = {"schedule": {"name": row.full_name, "fire_at": fire_at.isoformat(), "manual": False}}
        self.dispatches += start_run(self.engine, self.tx, self.plan, run_id, inputs, key, started_by, 0)
        detail = {"workflow": self.plan.workflow.name, "version": self.plan.version, "via": "schedule"}
        audit.record(self.tx, Who(f"schedule:{row.full_name}"[:200]), "run.submit", f"run:{run_id}", detail)
        row.last_run_id, self.previous_active = run_id, True
        return "started", run_id, None

    def finish(self, owed: Due) -> None:
        """Record how far the schedule got: its latest due tick (fired or passed over), the run it
        started last, the buffered tick, and a warning when a catchup was capped."""
        row = self.row
        if owed.passed_over:
            log.info(
                "schedule %s: %d missed tick(s) not run (catchup: %s)", row.full_name, owed.passed_over, row.catchup
            )
        if owed.capped:
            self.warning = (
                f"more than {len(owed.fire)} ticks were missed; the latest {len(owed.fire)} ran (catchup: all)"
            )
            log.warning("schedule %s: %s", row.full_name, self.warning)
        values: dict[str, Any] = {"last_run_id": row.last_run_id, "pending_fire_at": row.pending_fire_at}
        if owed.latest is not None:
            values["last_fire_at"] = max(owed.latest, row.last_fire_at or owed.latest)
            kept = timedelta(seconds=DEFAULT_SCHEDULE_FIRES_KEPT_S)
            self.tx.prune_fires(row.workflow, row.name, values["last_fire_at"] - kept)
        if self.warning is not None:
            values.update(warning=self.warning, warning_at=self.at)
        self.tx.update_schedule(row.workflow, row.name, **values)


def render_inputs(sp: SchedulePlan, workflow: str, fire_at: datetime, manual: bool) -> dict[str, Any]:
    """The run's inputs: the schedule's ``inputs``, reading ``schedule`` (name, workflow, fire_at,
    manual)."""
    context = {"schedule": {"name": sp.name, "workflow": workflow, "fire_at": fire_at.isoformat(), "manual": manual}}
    inputs = sp.inputs.render(context)
    if not isinstance(inputs, dict):
        raise InputsError("a schedule's inputs must be an object")
    return inputs


@dataclass(frozen=True)
class Triggered:
    schedule: str
    run_id: str
    fire_at: datetime
    dispatches: list[Dispatch]

    def as_json(self) -> dict[str, Any]:
        """``schedules trigger --json``."""
        return {"schedule": self.schedule, "run_id": self.run_id, "fire_at": self.fire_at.isoformat()}


def trigger(engine: Engine, full_name: str, who: Who) -> Triggered:
    """Start a run of the schedule now, recorded as manual: whatever its pause or overlap policy,
    since a person asked for it. Inputs failing the schema are refused (exit 2), nothing started."""
    workflow, name = split_name(full_name)
    with engine.repo.transaction() as tx:
        row = _locked(tx, workflow, name)
        found = _schedule_plan(engine, tx, row)
        if found is None:
            raise NotFound(f"schedule {shown(full_name)} is not in the active version of {shown(workflow)}")
        plan, sp = found
        fire_at = tx.store_time()
        inputs = render_inputs(sp, workflow, fire_at, manual=True)
        check_inputs(plan.workflow, inputs)
        run_id = str(uuid.uuid4())
        tx.claim_fire(workflow, name, fire_at, "manual", "started", fire_at, run_id=run_id, detail=who.by)
        origin = {"name": full_name, "fire_at": fire_at.isoformat(), "manual": True, **who.detail()}
        dispatches = start_run(engine, tx, plan, run_id, inputs, None, {"schedule": origin}, 0)
        tx.update_schedule(workflow, name, last_run_id=run_id)
        audit.record(tx, who, "schedule.trigger", f"schedule:{full_name}", {"run_id": run_id})
    engine.send(dispatches)
    return Triggered(full_name, run_id, fire_at, dispatches)


def pause(engine: Engine, full_name: str, who: Who) -> bool:
    """No tick of the schedule fires until it is resumed (a buffered tick is dropped); False when
    it was paused already."""
    workflow, name = split_name(full_name)
    with engine.repo.transaction() as tx:
        row = _locked(tx, workflow, name)
        if row.paused:
            return False
        if row.pending_fire_at is not None:
            tx.update_fire(workflow, name, row.pending_fire_at, outcome="skipped", detail=f"paused by {who.by}")
        tx.update_schedule(workflow, name, paused=True, paused_by=who.by, pending_fire_at=None)
        audit.record(tx, who, "schedule.pause", f"schedule:{full_name}")
    log.info("schedule %s paused by %s%s", full_name, who.by, f": {who.reason}" if who.reason else "")
    return True


def resume(engine: Engine, full_name: str, who: Who) -> bool:
    """The schedule fires again from its next tick: the ticks it passed while paused are not
    owed (no catchup for a pause). False when it was not paused."""
    workflow, name = split_name(full_name)
    with engine.repo.transaction() as tx:
        row = _locked(tx, workflow, name)
        if not row.paused:
            return False
        tx.update_schedule(workflow, name, paused=False, paused_by=None, active_since=tx.store_time())
        audit.record(tx, who, "schedule.resume", f"schedule:{full_name}")
    log.info("schedule %s resumed by %s%s", full_name, who.by, f": {who.reason}" if who.reason else "")
    return True


def _locked(tx: Tx, workflow: str, name: str) -> ScheduleRow:
    row = tx.lock_schedule(workflow, name)
    if row is None:
        raise NotFound(f"no schedule {shown(workflow)}/{shown(name)} (orchestrator schedules list)")
    return row


def schedules_view(repo: Repository, workflow: str | None = None, at: datetime | None = None) -> list[dict[str, Any]]:
    """Every schedule (of ``workflow``): its spec, next fire times, last run and whether paused."""
    with repo.transaction() as tx:
        at = at or tx.store_time()
        rows = tx.schedules(workflow)
        last = {r.last_run_id: tx.run(r.last_run_id) for r in rows if r.last_run_id}
    found = []
    for row in rows:
        run = last.get(row.last_run_id) if row.last_run_id else None
        spec = _spec(row)
        found.append(
            {
                "name": row.full_name,
                "workflow": row.workflow,
                "schedule": row.name,
                "version": row.version,
                "spec": spec.text,
                "cron": row.cron,
                "every_s": row.every_s,
                "timezone": row.timezone,
                "catchup": row.catchup,
                "overlap": row.overlap,
                "paused": row.paused,
                "paused_by": row.paused_by,
                "next": [] if row.paused else [t.isoformat() for t in spec.upcoming(at, NEXT_SHOWN)],
                "last_fire_at": row.last_fire_at.isoformat() if row.last_fire_at else None,
                "last_run": None if run is None else {"run_id": run.id, "status": str(run.status)},
                "pending_fire_at": row.pending_fire_at.isoformat() if row.pending_fire_at else None,
                "warning": row.warning,
            }
        )
    return found
