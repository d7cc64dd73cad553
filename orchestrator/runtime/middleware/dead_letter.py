"""The dead-letter queue's writer: every step that fails for good gets an entry, in the same
transaction that fails it (run, step, item, task, the exact inputs, error, traceback, attempts)."""

from __future__ import annotations

import uuid

from orchestrator.runtime.middleware import Middleware
from orchestrator.runtime.scheduler import Failure
from orchestrator.store import Tx


class DeadLetterMiddleware(Middleware):
    def after_failed_for_good(self, tx: Tx, failure: Failure) -> None:
        row = failure.row
        tx.insert_dead_letter(
            {
                "id": str(uuid.uuid4()),
                "run_id": row.run_id,
                "step_run_id": row.id,
                "workflow": failure.plan.workflow.name,
                "step": row.step,
                "item_index": row.item_index if row.is_item else None,
                "task": failure.plan.steps[row.step].label,
                "inputs": row.inputs,
                "error": failure.error,
                "error_type": failure.error_type,
                "traceback": failure.traceback,
                "attempts": row.attempts,
                "status": "open",
                "failed_at": failure.at,
            }
        )
