"""Drill: a half-open partition: one worker's connections hang for 60 s instead of closing."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import Drill, assert_recovered
from tests.chaos.proxy import BLACKHOLE, PASS

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
PARTITION_S = 60.0


def test_a_hung_worker_is_replaced_and_its_late_result_refused(drill: Drill) -> None:
    # Given two workers, each with its own path to PostgreSQL and Redis, and a chain running on one
    routes = {"a": drill.route(), "b": drill.route()}
    workers = {name: drill.start_worker(concurrency=2, name=name, env=r.env) for name, r in routes.items()}
    steps = 16
    run_id = drill.start(drill.chain(steps, 0.5))
    in_flight = drill.wait_until_running(run_id, at_least=2)
    victim = drill.runner(max(in_flight, key=lambda name: int(name[1:])), workers)
    # When that worker's connections hang (accepted, never answered, never closed) for 60 s
    routes[victim].set_mode(BLACKHOLE)
    started = time.monotonic()
    # Then the other worker takes the step over once its lease lapses and finishes the run meanwhile
    view = drill.wait(run_id, timeout=PARTITION_S - 5)
    took = time.monotonic() - started
    finished = dict(drill.ledger.starts())
    time.sleep(max(0.0, PARTITION_S - (time.monotonic() - started)))
    # And when the partition heals, what the hung worker finished late is refused, not recorded twice
    routes[victim].set_mode(PASS)
    time.sleep(10)
    assert drill.stuck() == []
    assert_recovered(drill, run_id, drill.wait(run_id), in_flight, steps)
    assert view["status"] == "succeeded" and took < PARTITION_S
    assert drill.ledger.starts() == finished, "nothing started again after the partition healed"
    other = "b" if victim == "a" else "a"
    assert workers[other].poll() is None
