"""Drills on the orchestrator's own processes: a worker SIGKILLed mid-step, beat killed and
restarted, a worker whose clock is 5 minutes off."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.store import tables as t
from tests.chaos.conftest import Drill, assert_recovered, parent_of
from tests.conftest import IN_CI, write_workflow

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
CLOCK_SKEW = "+5m"
TICK_S = 2


def test_a_worker_killed_mid_step_loses_nothing(drill: Drill) -> None:
    # Given a chain running on one worker
    victim = drill.start_worker(concurrency=1, name="victim")
    steps = 20
    run_id = drill.start(drill.chain(steps, 0.3))
    in_flight = drill.wait_until_running(run_id, at_least=5)
    # When the worker and its pool are SIGKILLed while a step runs
    drill.kill(victim)
    # Then a new worker finishes the run; only the step that was running ran again
    drill.start_worker(concurrency=1, name="rescuer")
    view = drill.wait(run_id, timeout=90)
    assert_recovered(drill, run_id, view, in_flight, steps)


def test_a_worker_whose_clock_is_five_minutes_ahead_changes_nothing(drill: Drill) -> None:
    # Given two workers, one of them with its clock 5 minutes ahead (libfaketime), the leases
    # judged by the database's clock
    faketime = shutil.which("faketime")
    if faketime is None:
        message = "the clock drill needs libfaketime's `faketime` (Debian: apt-get install faketime)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    skew = {"FAKETIME": CLOCK_SKEW, **_preload(faketime)}
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env={**os.environ, **skew},
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert 290 < float(probe.stdout) - time.time() < 310, "the skew is really applied"
    drill.start_worker(concurrency=2, name="honest")
    skewed = drill.start_worker(concurrency=2, name="skewed", env=skew)
    # When runs go through both
    steps = 8
    runs = [drill.start(drill.chain(steps, 0.6, name=f"clock{i}")) for i in range(4)]
    # Then no lease is judged lapsed, nothing runs twice, every run succeeds
    for run_id in runs:
        view = drill.wait(run_id, timeout=120)
        assert view["status"] == "succeeded", view
    assert all(count == 4 for count in drill.ledger.starts().values()), drill.ledger.starts()
    with drill.repo.engine.connect() as c:
        retried = c.execute(sa.select(sa.func.count()).where(t.step_runs.c.attempts > 1)).scalar_one()
    assert retried == 0
    assert drill.stuck() == []
    assert skewed.poll() is None
    assert _ran_on(drill, "skewed"), "the skewed worker took part"


def _preload(faketime: str) -> dict[str, str]:
    """The environment ``faketime`` would set: its library, preloaded into the worker and its pool."""
    out = subprocess.run([faketime, "-f", CLOCK_SKEW, "env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: env[k] for k in ("LD_PRELOAD", "FAKETIME_NO_CACHE", "DONT_FAKE_MONOTONIC") if k in env}


def _ran_on(drill: Drill, name: str) -> bool:
    """Whether a step ran in the pool of the worker called ``name``."""
    worker = drill.workers[["honest", "skewed"].index(name)]
    pids = {int(pid) for _, _, pid in drill.ledger.entries()}
    return any(Path(f"/proc/{pid}").exists() and parent_of(pid) == worker.pid for pid in pids)


def _ticker(ledger: str) -> str:
    return f"""
name: ticker
inputs: {{type: object, required: [tick], properties: {{tick: {{type: string}}}}}}
steps:
  s0: {{task: "tests.chaos.steps:work", with: {{ledger: "{ledger}", name: "${{{{ inputs.tick }}}}", seconds: 0.05}}}}
schedules:
  - name: often
    every: {TICK_S}s
    inputs: {{tick: "${{{{ schedule.fire_at }}}}"}}
    catchup: all
    overlap: allow
"""


@pytest.fixture
def beat(drill: Drill) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = drill.workdir / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "beat", "--loglevel", "INFO"],
            env={**drill.env, "ORCHESTRATOR_BEAT_POLL_S": "0.5"},
            cwd=drill.workdir,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while b"beat: Starting..." not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_beat_killed_and_restarted_fires_each_tick_once(drill: Drill, beat: Any) -> None:
    # Given a schedule ticking every 2 s that owes every missed tick (catchup: all), a worker and beat
    registered = drill.cli("workflows", "register", str(write_workflow(drill.workdir, _ticker(str(drill.ledger.path)))))
    assert registered.returncode == 0, registered.stderr
    drill.start_worker(concurrency=2, name="w")
    first = beat("beat-1")
    _wait_for(lambda: len(_fires(drill)) >= 3, 30, "the schedule did not fire")
    # When beat is SIGKILLed, stays down for two ticks and is started again
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    down_at = max(f["fire_at"] for f in _fires(drill))
    time.sleep(2 * TICK_S + 1)
    beat("beat-2")
    _wait_for(
        lambda: max(f["fire_at"] for f in _fires(drill)) >= down_at + timedelta(seconds=4 * TICK_S),
        40,
        "no ticks after the restart",
    )
    time.sleep(1)
    # Then every tick from the first to the last was dealt with once, none skipped, each one run that succeeded
    fires = _fires(drill)
    ticks = [f["fire_at"] for f in fires]
    span = int((ticks[-1] - ticks[0]).total_seconds()) // TICK_S + 1
    assert len(ticks) == len(set(ticks)) == span, ticks
    assert {f["outcome"] for f in fires} == {"started"}
    assert len({f["run_id"] for f in fires}) == len(fires)
    _wait_for(lambda: _statuses(drill) == {"succeeded"}, 60, "the scheduled runs did not all succeed")
    assert len(drill.ledger.lines()) == 2 * len(fires), "each tick's step ran once"
    assert drill.stuck() == []


def _fires(drill: Drill) -> list[dict[str, Any]]:
    f = t.schedule_fires.c
    with drill.repo.engine.connect() as c:
        rows = c.execute(sa.select(t.schedule_fires).where(f.workflow == "ticker").order_by(f.fire_at))
        return [dict(r._mapping) for r in rows]


def _statuses(drill: Drill) -> set[str]:
    with drill.repo.engine.connect() as c:
        return set(c.execute(sa.select(t.runs.c.status).where(t.runs.c.workflow == "ticker")).scalars())


def _wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
