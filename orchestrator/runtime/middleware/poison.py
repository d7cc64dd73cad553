"""The poison limit: a step whose worker keeps getting lost (it kills its process, runs out of
memory, or its lease keeps lapsing) fails for good instead of taking workers down forever."""

from __future__ import annotations

from orchestrator.runtime.middleware import Middleware
from orchestrator.store import StepRow


class PoisonMiddleware(Middleware):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def after_lost(self, row: StepRow) -> str | None:
        if row.lost < self.limit:
            return None
        return f"the worker running this step was lost {row.lost} times (poison limit {self.limit})"
