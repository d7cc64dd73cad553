"""The Python client for other services: submit a run of a registered workflow, signal waiting
steps, emit events.

from orchestrator.client import submit
run_id = submit("order-pipeline", {"order_id": "A1"}, idempotency_key="order-A1", actor="shop")

``actor`` names the service in the audit trail (default ``ORCHESTRATOR_ACTOR``, else ``service``);
``by`` is its older name and still works.
"""

from __future__ import annotations

from typing import Any

from orchestrator.runtime import operations
from orchestrator.worker.connect import open_engine


def submit(
    workflow: str,
    inputs: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """Start a run of the registered ``workflow`` and return its id; the same key, the same run."""
    engine = open_engine()
    plan = operations.registered_plan(engine, workflow)
    who = operations.service(actor, reason)
    return operations.submit(engine, plan, inputs or {}, idempotency_key, who, via="client").run_id


def signal(
    event: str,
    key: Any = None,
    data: Any = None,
    run_id: str | None = None,
    by: str | None = None,
    signal_id: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> int:
    """Complete the steps waiting on ``event`` and ``key`` (in ``run_id`` only, when given); the
    number completed, 0 when none waited yet and the signal was kept for the step that will. A
    ``signal_id`` makes sending again safe: the same id a second time does nothing."""
    from orchestrator.runtime.signal import signal as send_signal

    who = operations.service(actor or by, reason)
    return len(send_signal(open_engine(), event, key, data, run_id, who, signal_id).delivered)


def emit(
    event: str,
    data: Any = None,
    emit_id: str | None = None,
    by: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> list[str]:
    """Start a run of every workflow whose ``on`` names ``event``; the ids of the runs started.
    An ``emit_id`` makes sending again safe: the same id a second time starts nothing."""
    from orchestrator.runtime.emit import emit as emit_event

    who = operations.service(actor or by, reason)
    return [run_id for _, run_id in emit_event(open_engine(), event, data, who, emit_id).started]
