"""Circuit breakers on the state store (the embedded default): open, no calls, one trial, close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestrator.definition import BreakerConfig
from orchestrator.runtime.breaker import BreakerOpen, Breakers
from orchestrator.store import Repository
from orchestrator.store.migrate import upgrade


@pytest.fixture
def breakers(tmp_path: Path) -> Breakers:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    return Breakers(Repository.from_url(url), None)


def failing() -> None:
    raise ConnectionError("down")


def test_opens_after_fail_max_and_makes_no_call_while_open(breakers: Breakers) -> None:
    config = BreakerConfig(fail_max=2, reset_timeout=30)
    calls: list[int] = []

    def counted() -> None:
        calls.append(1)
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            breakers.call("api", config, counted, 5)
    with pytest.raises(BreakerOpen, match="breaker api is open"):
        breakers.call("api", config, counted, 5)
    assert len(calls) == 2
    state = breakers.describe("api")
    assert (state["state"], state["failures"]) == ("open", 2)
    assert state["next_trial_at"] is not None
    # Another process (a second registry on the same store) sees it open too
    other = Breakers(breakers.repo, None)
    with pytest.raises(BreakerOpen):
        other.call("api", config, counted, 5)
    assert len(calls) == 2
    breakers.reset("api")
    assert breakers.describe("api")["state"] == "closed"


def test_excluded_errors_do_not_count(breakers: Breakers) -> None:
    config = BreakerConfig(fail_max=1, reset_timeout=30, exclude=("ValueError",))

    def bad_request() -> None:
        raise ValueError("bad input")

    for _ in range(3):
        with pytest.raises(ValueError):
            breakers.call("api", config, bad_request, 5)
    assert breakers.describe("api")["state"] == "closed"


def test_half_open_admits_one_trial_across_processes(breakers: Breakers) -> None:
    config = BreakerConfig(fail_max=1, reset_timeout=0.3)
    with pytest.raises(ConnectionError):
        breakers.call("api", config, failing, 5)
    time.sleep(0.4)
    # Given four "workers" (separate registries) arriving at the same moment after the reset timeout
    registries = [Breakers(breakers.repo, None) for _ in range(4)]
    barrier = threading.Barrier(4)
    calls: list[int] = []
    outcomes: list[str] = []

    def trial() -> str:
        calls.append(1)
        time.sleep(0.3)
        return "ok"

    def worker(registry: Breakers) -> None:
        barrier.wait()
        try:
            outcomes.append(registry.call("api", config, trial, 5))
        except BreakerOpen as exc:
            outcomes.append("deferred" if "trial call under way" in str(exc) or "open" in str(exc) else str(exc))

    threads = [threading.Thread(target=worker, args=(r,)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one called through, and it closed the breaker for everyone
    assert len(calls) == 1
    assert sorted(outcomes) == ["deferred", "deferred", "deferred", "ok"]
    assert breakers.describe("api")["state"] == "closed"
    assert breakers.call("api", config, trial, 5) == "ok"
