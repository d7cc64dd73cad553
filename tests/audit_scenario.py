"""Every audited action once, in-process, on the engine given (SQLite in the unit tier, PostgreSQL
in the integration tier): what the audit tests check the trail against."""

from __future__ import annotations

from typing import Any

from orchestrator import audit
from orchestrator.definition import Plan, build_plan, load_text
from orchestrator.dlq import discard, purge, replay
from orchestrator.runtime import approval, caching, operations, repair, versions
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.emit import emit
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.signal import signal
from tests.unit.harness import drive

ANA, BEN = Who("ana", "release 42"), Who("ben", "on call")
GATE = """
name: gate
steps:
  pay: {wait: {event: paid, key: "${{ inputs.order }}"}}
  sign: {needs: pay, approval: {required: 2}}
  ship: {needs: sign, task: "m:ship"}
"""
FLAKY = """
name: flaky
steps:
  charge: {task: "m:boom"}
"""
LISTENER = """
name: listener
on: [{event: invoice.uploaded, inputs: {url: "${{ event.data.url }}"}}]
steps:
  note: {task: "m:note", with: {url: "${{ inputs.url }}"}, cache: {key: "${{ inputs.url }}"}}
"""


def plan_of(text: str) -> Plan:
    return build_plan(load_text(text).workflow, check_tasks=False)


def _open_entry(engine: Engine, run_id: str) -> str:
    with engine.repo.transaction() as tx:
        return next(e.id for e in tx.dead_letters(run_id=run_id) if e.status == "open")


def every_action(engine: Engine) -> list[tuple[str, str, str | None]]:
    """Do each audited action once (as ana or ben); the (action, actor, reason) expected, in order."""
    done: list[tuple[str, str, str | None]] = []

    def did(action: str, who: Who) -> None:
        done.append((action, who.by, who.reason))

    gate, gate2 = plan_of(GATE), plan_of(GATE.replace("m:ship", "m:ship2"))
    versions.register(engine, gate, ANA)
    did("workflow.register", ANA)
    versions.register(engine, gate2, ANA)
    did("workflow.register", ANA)
    versions.rollback(engine, "gate", BEN)
    did("workflow.rollback", BEN)
    versions.activate(engine, "gate", gate2.version, ANA)
    did("workflow.activate", ANA)

    run_id = operations.submit(
        engine, operations.registered_plan(engine, "gate"), {"order": "A1"}, None, ANA, "cli"
    ).run_id
    did("run.submit", ANA)
    drive(engine)
    repair.pause(engine, run_id, BEN)
    did("run.pause", BEN)
    repair.resume(engine, run_id, BEN)
    did("run.resume", BEN)
    signal(engine, "paid", "A1", {"amount": 5}, None, ANA)
    did("signal.send", ANA)
    drive(engine)
    approval.decide(engine, run_id, "sign", ANA, "approved", comment="fine")
    did("step.approve", ANA)
    approval.decide(engine, run_id, "sign", BEN, "rejected", comment="not yet")
    did("step.reject", BEN)
    drive(engine)
    repair.skip(engine, run_id, "sign", ANA)
    did("step.skip", ANA)
    drive(engine)

    flaky = operations.submit(engine, plan_of(FLAKY), {}, None, BEN, "client").run_id
    did("run.submit", BEN)
    drive(engine)
    replay(engine, [_open_entry(engine, flaky)], None, ANA)
    did("dlq.replay", ANA)
    drive(engine)
    discard(engine.repo, [_open_entry(engine, flaky)], BEN)
    did("dlq.discard", BEN)
    repair.retry(engine, flaky, ANA)
    did("run.retry", ANA)
    drive(engine)
    repair.accept(engine, flaky, "charge", {"charged": 0}, BEN)
    did("step.accept", BEN)
    purge(engine.repo, 0, True, ANA)
    did("dlq.purge", ANA)

    versions.register(engine, plan_of(LISTENER), BEN)
    did("workflow.register", BEN)
    emit(engine, "invoice.uploaded", {"url": "s3://x"}, ANA)
    did("event.emit", ANA)
    drive(engine)
    caching.clear_cache(engine.repo, "listener", None, BEN)
    did("cache.clear", BEN)

    doomed = operations.submit(engine, operations.registered_plan(engine, "gate"), {"order": "B"}, None, BEN, "cli")
    did("run.submit", BEN)
    operations.cancel(engine, doomed.run_id, ANA)
    did("run.cancel", ANA)
    Breakers(engine.repo, None).reset("payments-api", BEN)
    did("breaker.reset", BEN)
    return done


def recorded(engine: Engine) -> list[tuple[str, str, str | None]]:
    """The trail, oldest first, as (action, actor, reason)."""
    rows = audit.list_records(engine.repo, limit=10_000)
    return [(r["action"], r["actor"], r["reason"]) for r in reversed(rows)]


def covered() -> set[str]:
    """The actions ``every_action`` covers: all but the schedules' (their commands arrive with them)."""
    return {a for a in audit.ACTIONS if not a.startswith("schedule.")}


def records_of(engine: Engine, **filters: Any) -> list[dict[str, Any]]:
    return audit.list_records(engine.repo, limit=10_000, **filters)
