"""Drill: PostgreSQL unreachable for 30 s in the middle of a run."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import Drill, assert_recovered
from tests.chaos.proxy import PASS, REFUSE

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
STORE_OUTAGE_S = 30.0


def test_a_store_outage_mid_run_is_survived(drill: Drill) -> None:
    # Given a worker reaching PostgreSQL through a proxy, running a chain
    route = drill.route()
    worker = drill.start_worker(concurrency=2, name="w", env=route.env, quiet=False)
    steps = 20
    run_id = drill.start(drill.chain(steps, 0.4))
    in_flight = drill.wait_until_running(run_id, at_least=3)
    # When PostgreSQL is unreachable for 30 s (new and open connections refused)
    route.pg.set_mode(REFUSE)
    outage_end = time.monotonic() + STORE_OUTAGE_S
    while time.monotonic() < outage_end:
        in_flight |= drill.running(run_id)  # the test's own connection is direct: it sees the truth
        time.sleep(0.05)
    route.pg.set_mode(PASS)
    # Then the worker is still alive, and only the step that was in flight ran again
    assert worker.poll() is None, f"the worker exited during the outage:\n{drill.log('w')[-3000:]}"
    view = drill.wait(run_id, timeout=120)
    assert_recovered(drill, run_id, view, in_flight, steps)
    assert worker.poll() is None
