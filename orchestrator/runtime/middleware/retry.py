"""Retries: the step's retry policy answers "again, and when?" for each failed attempt."""

from __future__ import annotations

from typing import ClassVar

from orchestrator.definition.model import RetryDecision
from orchestrator.runtime.middleware import Call, Middleware


class RetryMiddleware(Middleware):
    options: ClassVar[frozenset[str]] = frozenset({"retry"})

    def retry_verdict(self, call: Call, error: Exception, verdict: RetryDecision) -> RetryDecision:
        if not getattr(error, "retryable", True):
            return RetryDecision(False, 0.0, f"{type(error).__name__} is never retried")
        return call.step.retry.decide(call.attempt, error)
