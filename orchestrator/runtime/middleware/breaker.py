"""Circuit breakers around the call: while a breaker is open no call is made and the step waits
for its next trial, burning no attempt. Only the call itself goes through pybreaker; the breaker's
bookkeeping after the call can fail (its storage is down) without changing what the call did."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import redis

from orchestrator.definition import BreakerConfig
from orchestrator.errors import StateStoreError
from orchestrator.runtime.breaker import BreakerOpen, Breakers
from orchestrator.runtime.middleware import Call, Defer, Middleware
from orchestrator.settings import DEFAULT_BREAKER_UNAVAILABLE_WAIT_S, DEFAULT_TRIAL_TTL_S
from orchestrator.store import now

log = logging.getLogger(__name__)


class BreakerMiddleware(Middleware):
    options: ClassVar[frozenset[str]] = frozenset({"breaker"})

    def __init__(self, breakers: Breakers) -> None:
        self.breakers = breakers

    def around_call(self, call: Call, call_next: Callable[[], Any]) -> Any:
        name = call.step.step.breaker
        if name is None:
            return call_next()
        config = call.plan.workflow.breakers.get(name) or BreakerConfig()
        ttl = call.step.timeout or DEFAULT_TRIAL_TTL_S
        try:
            return self.breakers.call(name, config, call_next, ttl)
        except BreakerOpen as exc:
            raise Defer(exc.message, exc.retry_at) from None
        except (redis.RedisError, StateStoreError) as exc:
            # A breaker we cannot read is not a closed breaker: make no call, come back shortly.
            retry_at = now() + timedelta(seconds=DEFAULT_BREAKER_UNAVAILABLE_WAIT_S)
            raise Defer(f"breaker {name} cannot be read ({exc}); no call was made", retry_at) from None
