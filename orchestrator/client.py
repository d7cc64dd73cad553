"""The Python client for other services: submit a run of a registered workflow, signal waiting
steps, emit events.

from orchestrator.client import submit
run_id = submit("order-pipeline", {"order_id": "A1"}, idempotency_key="order-A1")
"""

from __future__ import annotations

from typing import Any

from orchestrator.runtime import operations
from orchestrator.worker.connect import open_engine


def submit(workflow: str, inputs: dict[str, Any] | None = None, idempotency_key: str | None = None) -> str:
    """Start a run of the registered ``workflow`` and return its id; the same key, the same run."""
    engine = open_engine()
    return operations.submit(engine, operations.registered_plan(engine, workflow), inputs or {}, idempotency_key).run_id


def signal(
    event: str,
    key: Any = None,
    data: Any = None,
    run_id: str | None = None,
    by: str | None = None,
    signal_id: str | None = None,
) -> int:
    """Complete the steps waiting on ``event`` and ``key`` (in ``run_id`` only, when given); the
    number completed, 0 when none waited yet and the signal was kept for the step that will. A
    ``signal_id`` makes sending again safe: the same id a second time does nothing."""
    from orchestrator.runtime.signal import signal as send_signal
    from orchestrator.settings import get_settings

    who = operations.Who(by or get_settings().default_actor)
    return len(send_signal(open_engine(), event, key, data, run_id, who, signal_id).delivered)


def emit(event: str, data: Any = None, emit_id: str | None = None, by: str | None = None) -> list[str]:
    """Start a run of every workflow whose ``on`` names ``event``; the ids of the runs started.
    An ``emit_id`` makes sending again safe: the same id a second time starts nothing."""
    from orchestrator.runtime.emit import emit as emit_event
    from orchestrator.settings import get_settings

    who = operations.Who(by or get_settings().default_actor)
    return [run_id for _, run_id in emit_event(open_engine(), event, data, who, emit_id).started]
