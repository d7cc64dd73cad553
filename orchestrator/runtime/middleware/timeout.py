"""Timeouts: an attempt over its ``timeout`` is interrupted and counts as a failed attempt.

The limit itself travels with the step's message (the worker turns it into Celery's soft and hard
time limits); here the soft limit's exception becomes what it means to a retry policy.
"""

from __future__ import annotations

from typing import ClassVar

from orchestrator.runtime.middleware import Call, Middleware


class StepTimeout(TimeoutError):
    """The attempt ran past its timeout."""


class TimeoutMiddleware(Middleware):
    options: ClassVar[frozenset[str]] = frozenset({"timeout"})

    def after_error(self, call: Call, error: Exception) -> Exception:
        if type(error).__name__ == "SoftTimeLimitExceeded":  # Celery's, without importing Celery here
            limit = f"its {call.step.timeout:g}s timeout" if call.step.timeout else "its time limit"
            return StepTimeout(f"the attempt ran past {limit}")
        return error
