"""The state store: run state in PostgreSQL (or SQLite, embedded) through one repository."""

from __future__ import annotations

from orchestrator.store.repository import STEP_ROW, DeadLetter, Repository, RunRow, StepRow, Tx, now

__all__ = ["STEP_ROW", "DeadLetter", "Repository", "RunRow", "StepRow", "Tx", "now"]
