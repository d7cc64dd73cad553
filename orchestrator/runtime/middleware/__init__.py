"""Middleware around a task's execution, in the manner of Dramatiq's: no-op hooks to override.

Each concern (retries, circuit breakers, timeouts, the poison limit, the dead-letter queue) is one
middleware that declares the step options it owns. The executor calls the hooks in stack order:

- ``around_call(call, call_next)`` wraps the step's function (a breaker decides whether to call);
  raising ``Defer`` means no call was made and the step comes back later, burning no attempt;
- ``after_success(call, output)`` runs once the function returned; a hook that fails here is logged
  and never re-runs the step;
- ``after_error(call, error)`` says what an error means (a soft time limit is a ``StepTimeout``);
- ``retry_verdict(call, error, verdict)`` refines whether and when to try again;
- ``after_lost(row)`` judges a step whose lease lapsed (a reason to fail it for good, or None);
- ``after_failed_for_good(tx, failure)`` records a step that will not be tried again, in the same
  transaction that fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from orchestrator.definition import Plan, Step, StepPlan
from orchestrator.definition.model import RetryDecision
from orchestrator.errors import OrchestratorError
from orchestrator.runtime.scheduler import Failure
from orchestrator.store import StepRow, Tx

log = logging.getLogger(__name__)

# Step keys the scheduler itself reads: ordering, conditions and fan-out.
SCHEDULER_OPTIONS = frozenset(
    {
        "description",
        "needs",
        "trigger",
        "if",
        "foreach",
        "concurrency",
        "next",
        "transitions",
        "end",
        "gate",
        "compensate",
    }
)


@dataclass(frozen=True)
class CacheHit:
    """The output came from the cache: the entry's key and the run that produced it."""

    key: str
    run_id: str | None


@dataclass
class Call:
    """One attempt of one task step, as the middleware sees it. ``inputs`` are the keyword
    arguments the function gets (a middleware may convert them); ``row.inputs`` stay the JSON."""

    row: StepRow
    plan: Plan
    step: StepPlan
    inputs: dict[str, Any]
    function: Callable[..., Any] | None = None
    load_context: Callable[[], dict[str, Any]] | None = None  # run inputs and upstream outputs
    cached: CacheHit | None = None  # set by the cache on a hit: no function was called
    cache_key: str | None = None  # set by the cache on a miss: where a success is kept
    cache_value: Any = None  # on a miss, the function's own output (as JSON): what is kept, before any check
    refresh_cache: bool = False  # a cached value the checks refused: call the function, replace the entry
    unready: Exception | None = None  # why the function cannot be called (a secret not set): fails a cache miss
    _context: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def attempt(self) -> int:
        return self.row.attempts

    def context(self) -> dict[str, Any]:
        """What the step's expressions read (``inputs``, ``steps``, and ``item``/``index`` for a
        foreach item), read from the store once and only when a middleware asks."""
        if self._context is None:
            self._context = self.load_context() if self.load_context is not None else {"inputs": {}, "steps": {}}
        return self._context


class Defer(OrchestratorError):
    """No call was made; the step comes back at ``retry_at`` without spending an attempt."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class Middleware:
    """Hooks around a task's execution; every one is a no-op here."""

    options: ClassVar[frozenset[str]] = frozenset()

    def around_call(self, call: Call, call_next: Callable[[], Any]) -> Any:
        return call_next()

    def after_success(self, call: Call, output: Any) -> None:
        return None

    def after_error(self, call: Call, error: Exception) -> Exception:
        return error

    def retry_verdict(self, call: Call, error: Exception, verdict: RetryDecision) -> RetryDecision:
        return verdict

    def after_lost(self, row: StepRow) -> str | None:
        return None

    def after_failed_for_good(self, tx: Tx, failure: Failure) -> None:
        return None

    def after_succeeded(self, tx: Tx, call: Call, output: Any) -> None:
        """The step's success is being recorded in ``tx``: write what belongs with it."""
        return None


class Stack:
    """The middleware in order; each step option is owned by exactly one of them (or by the
    scheduler or a step kind), and an option nobody owns is an error when the stack is built."""

    def __init__(self, middleware: Sequence[Middleware], kind_options: frozenset[str] | None = None):
        if kind_options is None:
            from orchestrator.runtime.kinds import default_kinds

            kind_options = default_kinds().options
        self.middleware = list(middleware)
        owners: dict[str, str] = dict.fromkeys(SCHEDULER_OPTIONS | kind_options, "the scheduler")
        for m in self.middleware:
            for option in m.options:
                if option in owners:
                    raise OrchestratorError(f"step option '{option}' is owned twice ({owners[option]}, {m!r})")
                owners[option] = type(m).__name__
        self.owners = owners
        unowned = sorted(_step_options() - owners.keys())
        if unowned:
            raise OrchestratorError(f"step option(s) {', '.join(unowned)} handled by no middleware in this stack")

    @property
    def options(self) -> frozenset[str]:
        return frozenset(self.owners)

    def call(self, call: Call, function: Callable[[], Any]) -> Any:
        chained = function
        for m in reversed(self.middleware):
            chained = _bind(m, call, chained)
        return chained()

    def after_success(self, call: Call, output: Any) -> None:
        for m in self.middleware:
            try:
                m.after_success(call, output)
            except Exception:  # the step already succeeded: a failing hook must not re-run it
                log.exception("%s.after_success failed for step %s; the step's success stands", m, call.step.id)

    def after_error(self, call: Call, error: Exception) -> Exception:
        for m in self.middleware:
            error = m.after_error(call, error)
        return error

    def retry_verdict(self, call: Call, error: Exception) -> RetryDecision:
        verdict = RetryDecision(False, 0.0, "no middleware retries it")
        for m in self.middleware:
            verdict = m.retry_verdict(call, error, verdict)
        return verdict

    def after_lost(self, row: StepRow) -> str | None:
        for m in self.middleware:
            reason = m.after_lost(row)
            if reason is not None:
                return reason
        return None

    def after_failed_for_good(self, tx: Tx, failure: Failure) -> None:
        for m in self.middleware:
            m.after_failed_for_good(tx, failure)

    def after_succeeded(self, tx: Tx, call: Call, output: Any) -> None:
        for m in self.middleware:
            m.after_succeeded(tx, call, output)


def _bind(m: Middleware, call: Call, call_next: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: m.around_call(call, call_next)


def _step_options() -> set[str]:
    return {info.alias or name for name, info in Step.model_fields.items()}


def default_stack(*, poison_limit: int, breakers: Any, repo: Any) -> Stack:
    """Timeouts, retries, checks, the cache, breakers, the poison limit and the dead-letter
    queue, in that order: checks see a cached output too, and a cache hit makes no breaker call."""
    from orchestrator.runtime.middleware.breaker import BreakerMiddleware
    from orchestrator.runtime.middleware.cache import CacheMiddleware
    from orchestrator.runtime.middleware.checks import ChecksMiddleware
    from orchestrator.runtime.middleware.dead_letter import DeadLetterMiddleware
    from orchestrator.runtime.middleware.poison import PoisonMiddleware
    from orchestrator.runtime.middleware.retry import RetryMiddleware
    from orchestrator.runtime.middleware.timeout import TimeoutMiddleware

    return Stack(
        [
            TimeoutMiddleware(),
            RetryMiddleware(),
            ChecksMiddleware(),
            CacheMiddleware(repo),
            BreakerMiddleware(breakers),
            PoisonMiddleware(poison_limit),
            DeadLetterMiddleware(),
        ]
    )


__all__ = ["CacheHit", "Call", "Defer", "Middleware", "Stack", "default_stack"]
