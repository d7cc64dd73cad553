"""Schedules for real: PostgreSQL, Redis, a worker and two ``orchestrator beat`` processes at once.
Each tick starts exactly one run, and a new version or a pause is picked up without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.store import tables as t
from tests.conftest import Cluster, write_workflow

pytestmark = pytest.mark.integration


def definition(every: str) -> str:
    return f"""
name: ticker
inputs: {{type: object, required: [tick], properties: {{tick: {{type: string}}}}}}
steps:
  work: {{task: "tests.integration.steps:echo", with: {{value: "${{{{ inputs.tick }}}}"}}}}
outputs: {{tick: "${{{{ steps.work.output }}}}"}}
schedules:
  - name: often
    every: {every}
    inputs: {{tick: "${{{{ schedule.fire_at }}}}"}}
    overlap: allow
"""


class Beats:
    """Beat processes of one test, in their own directory (to show they write no schedule file)."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        env = {**self.cluster.env, "ORCHESTRATOR_BEAT_POLL_S": "0.5"}
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "beat", "--loglevel", "INFO"],
            env=env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        deadline = time.monotonic() + 30
        while b"beat: Starting..." not in (self.workdir / f"{name}.log").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, self.log(name)
            time.sleep(0.1)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def beats(cluster: Cluster, tmp_path: Path) -> Iterator[Beats]:
    workdir = tmp_path / "beats"
    workdir.mkdir()
    found = Beats(cluster, workdir)
    yield found
    found.stop()


def fires(cluster: Cluster) -> list[dict[str, Any]]:
    f = t.schedule_fires.c
    with cluster.repo.engine.connect() as c:
        rows = c.execute(sa.select(t.schedule_fires).where(f.workflow == "ticker").order_by(f.fire_at))
        return [dict(r._mapping) for r in rows]


def scheduled_runs(cluster: Cluster) -> list[dict[str, Any]]:
    r = t.runs.c
    with cluster.repo.engine.connect() as c:
        rows = c.execute(sa.select(r.id, r.status, r.started_by, r.outputs).where(r.workflow == "ticker"))
        return [dict(row._mapping) for row in rows]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_two_beats_start_each_tick_once_and_follow_changes_without_a_restart(
    cluster: Cluster, beats: Beats, tmp_path: Path
) -> None:
    # Given a worker, two beats at once, and a workflow that ticks every 3 s
    registered = cluster.cli("workflows", "register", str(write_workflow(tmp_path, definition("3s"))))
    assert registered.returncode == 0, registered.stderr
    cluster.start_worker()
    beats.start("beat-a")
    beats.start("beat-b")

    # When they run side by side for about 20 s
    time.sleep(20)

    # Then each tick was claimed once, and the runs are the ticks: none twice, none lost
    wait_for(lambda: len(fires(cluster)) >= 4, 20, f"too few ticks: {fires(cluster)}")
    first = fires(cluster)
    assert all(f["kind"] == "scheduled" and f["outcome"] == "started" for f in first)
    assert all(f["fire_at"].timestamp() % 3 == 0 for f in first)
    assert len({f["fire_at"] for f in first}) == len(first)
    assert len({f["run_id"] for f in first}) == len(first)

    # When a new version ticks every 2 s: beat follows it with no restart
    registered = cluster.cli("workflows", "register", str(write_workflow(tmp_path, definition("2s"), "v2.yaml")))
    assert registered.returncode == 0, registered.stderr
    wait_for(lambda: any(f["fire_at"].timestamp() % 3 != 0 for f in fires(cluster)), 30, "the 2 s interval never fired")

    # When the schedule is paused: no tick fires until it is resumed
    paused = cluster.cli("schedules", "pause", "ticker/often", "--by", "ops")
    assert paused.returncode == 0, paused.stderr
    at_pause = datetime.now(UTC)
    time.sleep(5)
    assert [f for f in fires(cluster) if f["at"] > at_pause] == []

    beats.stop()
    everything = fires(cluster)
    runs = scheduled_runs(cluster)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in scheduled_runs(cluster)),
        60,
        f"runs did not all succeed: {scheduled_runs(cluster)}",
    )
    # The runs are exactly the ticks recorded: one run per distinct fire time, each reading its tick
    assert len(runs) == len(everything) == len({f["fire_at"] for f in everything})
    assert {r["id"] for r in runs} == {f["run_id"] for f in everything}
    ticks = sorted(r["started_by"]["schedule"]["fire_at"] for r in runs)
    assert ticks == sorted(f["fire_at"].isoformat() for f in everything)
    assert sorted(r["outputs"]["tick"] for r in scheduled_runs(cluster)) == ticks
    # Both beats kept sending the reconciler, and neither wrote a celerybeat-schedule file
    for name in ("beat-a", "beat-b"):
        assert "Sending due task orchestrator-reconcile" in beats.log(name), beats.log(name)
        assert "Traceback" not in beats.log(name), beats.log(name)
    assert sorted(p.name for p in beats.workdir.iterdir()) == ["beat-a.log", "beat-b.log"]
