"""Caching a task's output: ``cache: {key, ttl}``. A hit makes no call and spends no attempt; a
success is kept in the state store, shared by every worker, in the transaction that records it.

The default key covers the task, its rendered inputs and a hash of the function's source code, so
editing the function invalidates its entries. A key the step gives is scoped to its workflow and
step; the source is not part of it (put a version in the key to invalidate it by hand). No lock is
held across the call: two workers that miss the same key at once both run, and one entry results.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

from orchestrator.errors import EvaluationError, StateStoreError
from orchestrator.runtime.middleware import CacheHit, Call, Defer, Middleware
from orchestrator.runtime.typed import per_function, to_data
from orchestrator.settings import DEFAULT_CACHE_UNAVAILABLE_WAIT_S
from orchestrator.store import Repository, Tx, now, storable

log = logging.getLogger(__name__)


class CacheMiddleware(Middleware):
    options: ClassVar[frozenset[str]] = frozenset({"cache"})

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def around_call(self, call: Call, call_next: Callable[[], Any]) -> Any:
        if call.step.step.cache is None:
            return call_next()
        try:
            key = cache_key(call)
            entry = None
            if not call.refresh_cache:
                with self.repo.transaction() as tx:
                    entry = tx.cache_entry(key, now())
        except StateStoreError as exc:  # no call made yet: come back shortly, spending no attempt
            retry_at = now() + timedelta(seconds=DEFAULT_CACHE_UNAVAILABLE_WAIT_S)
            raise Defer(f"the cache cannot be read ({exc.message}); no call was made", retry_at) from None
        if entry is not None:
            call.cached = CacheHit(key, entry.run_id)
            return entry.output
        if call.unready is not None:  # raised here, not by the function: no breaker counts it
            raise call.unready
        result = call_next()
        try:  # kept as the function returned it: checks of this step may convert what it stores
            call.cache_key, call.cache_value = key, storable(to_data(result))
        except ValueError:  # not JSON: the step fails on it, and nothing is kept
            call.cache_key = None
        return result

    def after_succeeded(self, tx: Tx, call: Call, output: Any) -> None:
        at = now()
        if call.cached is not None:
            tx.cache_hit(call.cached.key, at)
            return
        if call.cache_key is None:
            return
        ttl = call.step.step.cache.ttl if call.step.step.cache is not None else None
        tx.keep_in_cache(
            {
                "key": call.cache_key,
                "workflow": call.plan.workflow.name,
                "step": call.row.step,
                "task": call.step.task,
                "output": call.cache_value,
                "run_id": call.row.run_id,
                "step_run_id": call.row.id,
                "created_at": at,
                "expires_at": None if ttl is None else at + timedelta(seconds=ttl),
            },
            replace=call.refresh_cache,
        )


def cache_key(call: Call) -> str:
    """The entry's key: the step's own key expression (an EvaluationError fails the step, never
    a silent miss), or the task, its rendered inputs and its source."""
    template = call.step.cache_key
    if template is not None:
        try:
            given = template.render(call.context())
        except EvaluationError as exc:
            raise EvaluationError(f"cache.key: {exc.message}") from None
        parts: list[Any] = ["key", call.plan.workflow.name, call.row.step, call.step.task, given]
    else:
        parts = ["default", call.step.task, call.row.inputs or {}, source_hash(call.function) if call.function else ""]
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"cache.key gave a value that is not JSON: {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()


@per_function
def source_hash(function: Callable[..., Any]) -> str:
    """A hash of the function's source (a Celery task's ``run``); of its bytecode and constants
    where the source is not available."""
    target = inspect.unwrap(getattr(function, "run", function))
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        if code is not None:
            text = repr((code.co_code, code.co_consts))
        else:  # a partial or a callable object: its class and what it wraps, never its address
            inner = getattr(target, "func", None)
            named = target if inner is None else inner
            text = f"{type(target).__module__}.{type(target).__qualname__}:{getattr(named, '__qualname__', '')}"
            if inner is not None:
                text += source_hash(inner)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
