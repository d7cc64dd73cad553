"""The Python client for other services: submit a run of a registered workflow.

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
