"""Drill: two worker hosts (network namespaces, their own hostnames); one is cut off mid-run.

Its steps are taken over by the other host once their lease lapses; when it comes back, what it
finished late is refused, not recorded twice. The cut (12 s) is shorter than a worker's patience
for recording a result (20 s), so the cut-off host does try to record its late success.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.store import tables as t
from tests.chaos.conftest import Drill, assert_recovered
from tests.chaos.hosts import Host, namespaces_unavailable
from tests.conftest import IN_CI

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
CUT_S = 12.0


@pytest.fixture
def hosts(drill: Drill) -> Iterator[dict[str, Host]]:
    reason = namespaces_unavailable()
    if reason is not None:
        message = f"the multi-host drill needs network namespaces (root, `ip netns`): {reason}"
        pytest.fail(message + " (CI=true: the drill must run)") if IN_CI else pytest.skip(message)
    made: dict[str, Host] = {}
    try:
        for name in ("h1", "h2"):
            made[name] = Host(name)
        yield made
    finally:
        drill.stop()  # the workers first: with their network gone, a warm shutdown waits on the broker
        for host in made.values():
            host.close()


def test_a_host_cut_off_mid_run_is_replaced_and_its_late_result_refused(drill: Drill, hosts: dict[str, Host]) -> None:
    # Given a worker on each host, reaching PostgreSQL and Redis through proxies on its veth
    workers = {}
    for name, host in hosts.items():
        route = drill.route(listen_host=host.address)
        workers[name] = drill.start_worker(concurrency=2, name=name, env=route.env, prefix=host.prefix())
    steps = 16
    run_id = drill.start(drill.chain(steps, 0.8))
    in_flight = drill.wait_until_running(run_id, at_least=2)
    victim = drill.runner(max(in_flight, key=lambda name: int(name[1:])), workers)
    # When that host's link goes down for 12 s
    hosts[victim].cut()
    cut_at = time.monotonic()
    while time.monotonic() - cut_at < CUT_S:
        in_flight |= drill.running(run_id)
        time.sleep(0.05)
    hosts[victim].restore()
    # Then the run finishes, each step recorded once; the step it held ran again, on the other host
    view = drill.wait(run_id, timeout=120)
    time.sleep(5)  # the returning host's late results have arrived by now
    assert_recovered(drill, run_id, drill.wait(run_id), in_flight, steps)
    assert view["status"] == "succeeded"
    retaken = [name for name, count in drill.ledger.starts().items() if count > 1]
    done = [name for kind, name, _ in drill.ledger.entries() if kind == "done"]
    assert retaken and all(done.count(name) == 2 for name in retaken), "the cut-off host finished its step too"
    other = "h2" if victim == "h1" else "h1"
    hosts_seen = _attempt_hosts(drill, run_id)
    assert hosts_seen[victim] and hosts_seen[other], hosts_seen
    assert all(process.poll() is None for process in workers.values())


def _attempt_hosts(drill: Drill, run_id: str) -> dict[str, set[str]]:
    """Per hostname, the steps it made an attempt at (a worker is named ``host:pid``)."""
    a, s = t.attempts.c, t.step_runs.c
    query = sa.select(s.step, a.worker).select_from(t.attempts.join(t.step_runs, a.step_run_id == s.id))
    query = query.where(s.run_id == run_id)
    found: dict[str, set[str]] = {"h1": set(), "h2": set()}
    with drill.repo.engine.connect() as c:
        for step, worker in c.execute(query):
            found.setdefault(str(worker).split(":", 1)[0], set()).add(step)
    return found
