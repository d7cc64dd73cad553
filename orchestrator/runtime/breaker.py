"""Circuit breakers shared by every worker: pybreaker's state machine on storage we control.

pybreaker gives the closed/open/half-open logic. Two of its defaults do not fit a fleet of
workers: its Redis storage logs and swallows Redis errors (a breaker that cannot be read must
not be treated as closed), and its half-open state lets every process through at once. So:

- state lives in Redis (atomic ``HINCRBY``) when the broker is Redis, else in the state store's
  ``breakers`` table; a storage error propagates and the step is deferred, never called blind;
- a listener admits one half-open trial across the fleet (``SET NX PX`` in Redis, a row claim
  in the database); everyone else waits for its outcome;
- while a breaker is open no call is made: ``BreakerOpen`` tells the runtime when to come back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import redis

from orchestrator import audit
from orchestrator.audit import Actor
from orchestrator.definition.model import BreakerConfig, exception_names
from orchestrator.errors import CircuitOpenError, NotFound
from orchestrator.errors import shown as shown_name
from orchestrator.store import Repository

log = logging.getLogger(__name__)
STATES = {pybreaker.STATE_CLOSED: "closed", pybreaker.STATE_OPEN: "open", pybreaker.STATE_HALF_OPEN: "half_open"}
_KEY = "orchestrator:breaker:{}"
_TRIAL_WAIT_S = 1.0
_CLOSED = {
    "state": pybreaker.STATE_CLOSED,
    "failures": 0,
    "opened_at": None,
    "next_trial_at": None,
    "trial_until": None,
}


class BreakerOpen(CircuitOpenError):
    """The circuit breaker is open: no call was made."""

    def __init__(self, name: str, retry_at: datetime, why: str) -> None:
        self.name, self.retry_at = name, retry_at
        super().__init__(f"breaker {name} is {why}; the step waits until {retry_at.isoformat()}")


class RedisStorage(pybreaker.CircuitBreakerStorage):
    """One hash per breaker; counters are atomic; errors are not swallowed."""

    def __init__(self, client: redis.Redis, name: str, reset_timeout: float = 0.0) -> None:
        super().__init__(name)
        self.client, self.key, self.reset_timeout = client, _KEY.format(name), reset_timeout

    def _get(self, field: str) -> str | None:
        value = self.client.hget(self.key, field)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)

    @property
    def state(self) -> str:
        return self._get("state") or pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self.client.hset(self.key, "state", state)

    def increment_counter(self) -> None:
        self.client.hincrby(self.key, "failures", 1)

    def reset_counter(self) -> None:
        self.client.hset(self.key, "failures", 0)

    def increment_success_counter(self) -> None:
        self.client.hincrby(self.key, "successes", 1)

    def reset_success_counter(self) -> None:
        self.client.hset(self.key, "successes", 0)

    @property
    def counter(self) -> int:
        return int(self._get("failures") or 0)

    @property
    def success_counter(self) -> int:
        return int(self._get("successes") or 0)

    @property
    def opened_at(self) -> datetime | None:
        value = self._get("opened_at")
        return None if value is None else datetime.fromtimestamp(float(value), UTC)

    @opened_at.setter
    def opened_at(self, at: datetime) -> None:
        self.client.hset(
            self.key, mapping={"opened_at": at.timestamp(), "next_trial_at": at.timestamp() + self.reset_timeout}
        )

    @property
    def next_trial_at(self) -> datetime | None:
        value = self._get("next_trial_at")
        return None if value is None else datetime.fromtimestamp(float(value), UTC)

    def take_trial(self, ttl_s: float) -> bool:
        return bool(self.client.set(self.key + ":trial", 1, nx=True, px=max(1, int(ttl_s * 1000))))

    def end_trial(self) -> None:
        self.client.delete(self.key + ":trial")

    def reset(self) -> None:
        self.client.delete(self.key, self.key + ":trial")

    @classmethod
    def names(cls, client: redis.Redis) -> list[str]:
        prefix = _KEY.format("")
        return sorted(k.decode()[len(prefix) :] for k in client.scan_iter(prefix + "*") if not k.endswith(b":trial"))


class DatabaseStorage(pybreaker.CircuitBreakerStorage):
    """The same, in the state store's ``breakers`` table (the embedded default)."""

    def __init__(self, repo: Repository, name: str, reset_timeout: float = 0.0) -> None:
        super().__init__(name)
        self.repo, self.reset_timeout = repo, reset_timeout
        self._successes = 0  # only the trial's holder succeeds while half-open: a local count is exact

    def _row(self) -> dict[str, Any]:
        with self.repo.transaction() as tx:
            return tx.breaker(self.name)

    def _set(self, **values: Any) -> None:
        with self.repo.transaction() as tx:
            tx.update_breaker(self.name, **values)

    @property
    def state(self) -> str:
        return str(self._row()["state"])

    @state.setter
    def state(self, state: str) -> None:
        self._set(state=state)

    def increment_counter(self) -> None:
        with self.repo.transaction() as tx:
            tx.add_breaker_failure(self.name)

    def reset_counter(self) -> None:
        self._set(failures=0)

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return int(self._row()["failures"])

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        value = self._row()["opened_at"]
        return value if isinstance(value, datetime) else None

    @opened_at.setter
    def opened_at(self, at: datetime) -> None:
        self._set(opened_at=at, next_trial_at=at + timedelta(seconds=self.reset_timeout))

    @property
    def next_trial_at(self) -> datetime | None:
        value = self._row().get("next_trial_at")
        return value if isinstance(value, datetime) else None

    def take_trial(self, ttl_s: float) -> bool:
        with self.repo.transaction() as tx:
            return tx.take_breaker_trial(self.name, datetime.now(UTC) + timedelta(seconds=ttl_s))

    def end_trial(self) -> None:
        self._set(trial_until=None)

    def reset(self) -> None:
        self._set(**_CLOSED)


class _OneTrial(pybreaker.CircuitBreakerListener):
    """Admits one half-open trial call across every worker; the rest are told to wait."""

    def __init__(self, storage: RedisStorage | DatabaseStorage, ttl_s: float) -> None:
        self.storage, self.ttl_s = storage, ttl_s
        self.holding = False

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        if cb.current_state != pybreaker.STATE_HALF_OPEN:
            return
        if not self.storage.take_trial(self.ttl_s):
            raise pybreaker.CircuitBreakerError("a half-open trial call is under way elsewhere")
        self.holding = True

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        """The trial's holder frees it once the breaker has left half-open (closed or open again);
        the lock's time-to-live frees it if the holder dies mid-trial."""
        if self.holding and new is not None and new.name != pybreaker.STATE_HALF_OPEN:
            self.holding = False
            self.storage.end_trial()


class _Guarded:
    """The function as pybreaker calls it, remembering whether it ran and how it ended."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.started = False
        self.returned = False
        self.result: Any = None
        self.error: BaseException | None = None

    def __call__(self) -> Any:
        self.started = True
        try:
            self.result = self.function()
        except BaseException as exc:
            self.error = exc
            raise
        self.returned = True
        return self.result

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Breakers:
    """This process's breakers, by name, over shared storage."""

    def __init__(self, repo: Repository, redis_url: str | None) -> None:
        self.repo = repo
        self.client = redis.Redis.from_url(redis_url) if redis_url and redis_url.startswith("redis") else None
        self._breakers: dict[str, tuple[pybreaker.CircuitBreaker, RedisStorage | DatabaseStorage, float]] = {}

    def storage(self, name: str, reset_timeout: float = 0.0) -> RedisStorage | DatabaseStorage:
        if self.client is not None:
            return RedisStorage(self.client, name, reset_timeout)
        return DatabaseStorage(self.repo, name, reset_timeout)

    def call(self, name: str, config: BreakerConfig, function: Callable[[], Any], trial_ttl_s: float) -> Any:
        """Call ``function`` through the breaker; BreakerOpen (no call made) when it is open or
        mid-trial. A storage error before the call propagates (no call is made); one after it, while
        pybreaker records the outcome, is logged and never changes the call's result or error."""
        breaker, storage, reset = self._breaker(name, config, trial_ttl_s)
        call = _Guarded(function)
        try:
            breaker.call(call)
        except pybreaker.CircuitBreakerError as exc:
            if call.started:
                raise  # the function itself raised it: its error, not the breaker's
            opened = storage.opened_at or datetime.now(UTC)
            retry_at = max(opened + timedelta(seconds=reset), datetime.now(UTC) + timedelta(seconds=_TRIAL_WAIT_S))
            why = "open" if "trial" not in str(exc) else "half-open with a trial call under way"
            raise BreakerOpen(name, retry_at, why) from None
        except BaseException as exc:
            if not call.started:
                raise  # reading the breaker failed: no call was made
            if call.error is None or exc is not call.error:
                log.warning("breaker %s: recording the call's outcome failed: %r", name, exc)
        return call.outcome()

    def _breaker(
        self, name: str, config: BreakerConfig, trial_ttl_s: float
    ) -> tuple[pybreaker.CircuitBreaker, RedisStorage | DatabaseStorage, float]:
        found = self._breakers.get(name)
        if found is None:
            storage = self.storage(name, config.reset_timeout)
            excluded = set(config.exclude)
            breaker = pybreaker.CircuitBreaker(
                fail_max=config.fail_max,
                reset_timeout=config.reset_timeout,
                exclude=[lambda exc: bool(excluded & exception_names(exc))] if excluded else [],
                state_storage=storage,
                listeners=[_OneTrial(storage, trial_ttl_s)],
                throw_new_error_on_trip=False,
                name=name,
            )
            found = self._breakers[name] = (breaker, storage, config.reset_timeout)
        return found

    # Inspection, for `orchestrator breakers`

    def describe(self, name: str) -> dict[str, Any]:
        storage = self.storage(name)
        state = STATES.get(storage.state, storage.state)
        opened, next_trial = storage.opened_at, storage.next_trial_at
        shown = state != "closed"
        return {
            "name": name,
            "state": state,
            "failures": storage.counter,
            "opened_at": opened.isoformat() if opened and shown else None,
            "next_trial_at": next_trial.isoformat() if next_trial and shown else None,
        }

    def describe_all(self) -> list[dict[str, Any]]:
        """``breakers list --json``: every breaker that has been used."""
        return [self.describe(name) for name in self.names()]

    def reset_known(self, name: str, who: Actor) -> dict[str, Any]:
        """Close a breaker that has been used (NotFound for a name never seen), and describe it."""
        if name not in self.names():
            raise NotFound(f"no breaker {shown_name(name)} (orchestrator breakers list)")
        self.reset(name, who)
        return self.describe(name)

    def names(self) -> list[str]:
        if self.client is not None:
            return RedisStorage.names(self.client)
        with self.repo.transaction() as tx:
            return tx.breaker_names()

    def reset(self, name: str, who: Actor | None = None) -> None:
        """Close ``name`` by hand. Audited when ``who`` is given, in one transaction with the
        change: in the database for the embedded store; with Redis the reset is made last inside
        the transaction, so a failed reset records nothing."""
        storage = self.storage(name)
        if who is None:
            storage.reset()
            return
        before = STATES.get(storage.state, storage.state)
        with self.repo.transaction() as tx:
            if isinstance(storage, DatabaseStorage):
                tx.update_breaker(name, **_CLOSED)
            audit.record(tx, who, "breaker.reset", f"breaker:{name}", {"state_before": before})
            if not isinstance(storage, DatabaseStorage):
                storage.reset()
