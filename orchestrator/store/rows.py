"""The rows the repository hands out: runs and step runs, as plain dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.status import RunStatus, StepStatus

STEP_ROW = -1  # item_index of a step's own row; foreach items are 0..n-1


def event_row(row: StepRow, kind: str, detail: dict[str, Any] | None, at: datetime) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "step": row.step,
        "item_index": row.item_index if row.is_item else None,
        "kind": kind,
        "detail": detail,
        "at": at,
    }


def storable(value: Any) -> Any:
    """``value`` as the store keeps it: JSON data, with no NaN, no infinity and no NUL character
    (PostgreSQL's jsonb refuses them, so no backend is allowed them). ValueError says why not."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if "\\u0000" in text:
        raise ValueError("it contains a NUL character (\\u0000), which the state store cannot hold")
    return json.loads(text)


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class RunRow:
    id: str
    workflow: str
    version: str
    status: RunStatus
    inputs: Any
    outputs: Any
    error: str | None
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_run_id: str | None = None
    parent_step_run_id: int | None = None
    depth: int = 0
    started_by: Any = None
    chain_depth: int = 0
    compensation: Any = None

    @classmethod
    def from_row(cls, row: sa.Row[Any] | dict[str, Any]) -> RunRow:
        data = dict(row) if isinstance(row, dict) else dict(row._mapping)
        data["status"] = RunStatus(data["status"])
        for key in ("created_at", "started_at", "finished_at"):
            data[key] = aware(data[key])
        return cls(**data)


@dataclass
class StepRow:
    id: int
    run_id: str
    step: str
    item_index: int
    status: StepStatus
    attempts: int
    inputs: Any
    output: Any
    error: str | None
    traceback: str | None
    reason: str | None
    worker: str | None
    dispatch_id: str | None
    lost: int
    not_before: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None = None
    lease_expires_at: datetime | None = None
    needs_open: int = 0
    wait_kind: str | None = None
    wait_event: str | None = None
    wait_key: str | None = None
    wake: str | None = None
    cached: bool | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any] | dict[str, Any]) -> StepRow:
        data = dict(row) if isinstance(row, dict) else dict(row._mapping)
        data["status"] = StepStatus(data["status"])
        for key in ("not_before", "queued_at", "started_at", "finished_at", "lease_expires_at"):
            data[key] = aware(data[key])
        return cls(**data)

    @property
    def is_item(self) -> bool:
        return self.item_index != STEP_ROW
