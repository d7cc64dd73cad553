"""Emitting an event: every workflow whose active version's ``on`` names the event starts a run.

All the runs an emission starts are created in one transaction, each under an idempotency key
made of its ``on`` entry and the emission's id, so an emission sent again (a redelivered Celery
message, a client retrying with the same id) starts nothing new.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from orchestrator import audit
from orchestrator.definition.model import EVENT_PATTERN
from orchestrator.errors import UsageError, shown
from orchestrator.runtime.chaining import start_subscribers
from orchestrator.runtime.checks import check_payload
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.settings import DEFAULT_SERVICE_ACTOR


@dataclass
class Emitted:
    event: str
    id: str
    started: list[tuple[str, str]] = field(default_factory=list)  # (workflow, run id)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (workflow, why)
    duplicate: bool = False  # this emission id was handled before: nothing new started
    dispatches: list[Dispatch] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "id": self.id,
            "started": [{"workflow": w, "run_id": r} for w, r in self.started],
            "skipped": [{"workflow": w, "reason": y} for w, y in self.skipped],
            "duplicate": self.duplicate,
        }


def emit(engine: Engine, event: str, data: Any = None, who: Who | None = None, emit_id: str | None = None) -> Emitted:
    """Start a run of every workflow subscribed to ``event`` (its ``on`` entry's ``if`` holding),
    with ``event.data`` and ``event.id`` for its ``inputs`` expressions."""
    if not isinstance(event, str) or not re.fullmatch(EVENT_PATTERN, event):
        raise UsageError(f"{shown(repr(event))} is not an event name (letters, digits and _ . : / -, at most 200)")
    if emit_id is not None and not 0 < len(emit_id) <= 150:
        raise UsageError("--id must be 1 to 150 characters", {"--id": "id"})
    check_payload(data, "the event's data")
    emit_id = emit_id or str(uuid.uuid4())
    done = Emitted(event, emit_id)
    who = who or Who(DEFAULT_SERVICE_ACTOR)
    origin = {"event": {"name": event, "id": emit_id, "by": who.by}}
    context = {"event": {"name": event, "id": emit_id, "data": data}}
    try:
        with engine.repo.transaction() as tx:
            subscribers = tx.subscribers("event", event)
            chained = start_subscribers(engine, tx, subscribers, context, origin, f"event:{emit_id}", 0)
            if chained.started or not chained.already:  # an emission sent again changes nothing: no record
                started = [{"workflow": w, "run_id": r} for w, r in chained.started]
                audit.record(tx, who, "event.emit", f"event:{event}", {"id": emit_id, "started": started})
    except sa.exc.IntegrityError:  # the same emission, handled at this very moment elsewhere
        done.duplicate = True
        return done
    done.started, done.skipped, done.dispatches = chained.started, chained.skipped, chained.dispatches
    done.duplicate = chained.already > 0 and not chained.started
    engine.send(done.dispatches)
    return done
