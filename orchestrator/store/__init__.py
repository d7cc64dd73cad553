"""The state store: run state in PostgreSQL (or SQLite, embedded) through one repository."""

from __future__ import annotations

from orchestrator.store.dead_letters import DeadLetter
from orchestrator.store.repository import Repository, Tx
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow, now, storable
from orchestrator.store.steps import Ended

__all__ = ["STEP_ROW", "DeadLetter", "Ended", "Repository", "RunRow", "StepRow", "Tx", "now", "storable"]
