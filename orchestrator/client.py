"""The Python client for other services: submit a run of a registered workflow.

from orchestrator.client import submit
run_id = submit("order-pipeline", {"order_id": "A1"}, idempotency_key="order-A1")
"""

from __future__ import annotations

from typing import Any

from orchestrator.runtime.connect import open_repository
from orchestrator.runtime.service import Runtime


def submit(workflow: str, inputs: dict[str, Any] | None = None, idempotency_key: str | None = None) -> str:
    """Start a run of the registered ``workflow`` and return its id; the same key, the same run."""
    from orchestrator.worker.tasks import resolve_task, send

    rt = Runtime(open_repository(), resolve_task)
    submitted = rt.submit(rt.registered_plan(workflow), inputs or {}, idempotency_key)
    send(submitted.dispatches)
    return submitted.run_id
