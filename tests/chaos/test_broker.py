"""Drill: Redis unreachable for 15 s while a step's message is unacknowledged."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import Drill, assert_recovered
from tests.chaos.proxy import PASS, REFUSE

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
REDIS_OUTAGE_S = 15.0


def test_a_redis_outage_mid_run_is_survived(drill: Drill) -> None:
    # Given a worker as the Procfile runs it (gossip, mingle, heartbeats), reaching Redis through a proxy,
    # running a chain (the delivery that runs it is unacknowledged)
    route = drill.route()
    worker = drill.start_worker(concurrency=2, name="w", env=route.env, quiet=False)
    steps = 30
    run_id = drill.start(drill.chain(steps, 0.4))
    in_flight = drill.wait_until_running(run_id, at_least=3)
    # When Redis is unreachable for 15 s (new and open connections refused)
    route.redis.set_mode(REFUSE)
    outage_end = time.monotonic() + REDIS_OUTAGE_S
    while time.monotonic() < outage_end:
        in_flight |= drill.running(run_id)
        time.sleep(0.05)
    route.redis.set_mode(PASS)
    # Then the worker is still alive, and the run finishes as if nothing happened
    assert worker.poll() is None, f"the worker exited during the outage:\n{drill.log('w')[-3000:]}"
    view = drill.wait(run_id, timeout=120)
    assert worker.poll() is None
    assert_recovered(drill, run_id, view, in_flight, steps)
