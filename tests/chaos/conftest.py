"""The drills' harness: real worker processes reaching PostgreSQL and Redis through proxies the test controls.

The test itself reads the state store directly (never through a proxy), so it sees the truth while a
worker is cut off. Leases and intervals are short so that each drill is over in about a minute.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from orchestrator.store import tables as t
from tests.chaos.proxy import Proxy
from tests.conftest import Cluster

CHAOS_STEPS = "tests.chaos.steps"
CHAOS_ENV = {
    "ORCHESTRATOR_TASK_MODULES": f"tests.integration.steps,{CHAOS_STEPS}",
    "ORCHESTRATOR_LEASE_S": "2",
    "ORCHESTRATOR_RECONCILE_INTERVAL_S": "0.5",
    "ORCHESTRATOR_RECONCILE_STALE_S": "3",
    "ORCHESTRATOR_VISIBILITY_TIMEOUT_S": "20",
}


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def through(url: str, proxy: Proxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return parts._replace(netloc=f"{auth}{proxy.host}:{proxy.port}").geturl()


@dataclass
class Route:
    """One path to the services: a PostgreSQL proxy and a Redis proxy, and the env that uses them."""

    pg: Proxy
    redis: Proxy
    env: dict[str, str]

    def set_mode(self, mode: str) -> None:
        self.pg.set_mode(mode)
        self.redis.set_mode(mode)


@dataclass
class Ledger:
    """What the step functions wrote: ``start``/``done`` lines."""

    path: Path

    def lines(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        return [tuple(line.split()[:2]) for line in self.path.read_text().splitlines()]  # type: ignore[misc]

    def entries(self) -> list[tuple[str, str, str]]:
        """``(kind, step, pid)`` per line."""
        if not self.path.exists():
            return []
        return [tuple(line.split()[:3]) for line in self.path.read_text().splitlines()]  # type: ignore[misc]

    def starts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind, name in self.lines():
            if kind == "start":
                counts[name] = counts.get(name, 0) + 1
        return counts

    def started(self) -> set[str]:
        return set(self.starts())


class Drill(Cluster):
    """A cluster whose workers reach the services through routes the test controls."""

    grace_s = 5.0  # the drill checked what it checks before teardown: no need to wait long

    def __init__(self, database_url: str, broker_url: str, workdir: Path) -> None:
        super().__init__(database_url, broker_url, workdir)
        self.env.update(CHAOS_ENV)
        self.routes: list[Route] = []
        self.ledger = Ledger(workdir / "ledger.txt")

    def route(self, listen_host: str = "127.0.0.1") -> Route:
        pg = Proxy(address(self.database_url.replace("+psycopg", "")), listen_host=listen_host)
        broker = Proxy(address(self.broker_url), listen_host=listen_host)
        env = {
            "ORCHESTRATOR_DATABASE_URL": through(self.database_url, pg),
            "ORCHESTRATOR_BROKER_URL": through(self.broker_url, broker),
        }
        route = Route(pg, broker, env)
        self.routes.append(route)
        return route

    def chain(self, steps: int, seconds: float, name: str = "drill") -> Path:
        """A chain of ``steps`` steps, each taking ``seconds`` and writing the ledger."""
        lines = [f"name: {name}", "steps:"]
        for i in range(steps):
            needs = f", needs: [s{i - 1}]" if i else ""
            lines.append(
                f"  s{i}: {{task: '{CHAOS_STEPS}:work', "
                f"with: {{ledger: '{self.ledger.path}', name: s{i}, seconds: {seconds}}}{needs}}}"
            )
        path = self.workdir / f"{name}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def running(self, run_id: str) -> set[str]:
        from orchestrator.runtime.views import run_view

        return {name for name, s in run_view(self.repo, run_id)["steps"].items() if s["status"] == "running"}

    def runner(self, step: str, workers: dict[str, subprocess.Popen[bytes]]) -> str:
        """Which of ``workers`` runs ``step``: the parent of the pool process that wrote its last start."""
        deadline = time.monotonic() + 10
        while not (pids := [pid for kind, name, pid in self.ledger.entries() if (kind, name) == ("start", step)]):
            assert time.monotonic() < deadline, f"{step} never started"
            time.sleep(0.02)
        pid = pids[-1]
        parent = parent_of(int(pid))
        [name] = [name for name, process in workers.items() if parent in (process.pid, int(pid))]
        return name

    def wait_until_running(self, run_id: str, at_least: int, timeout: float = 60) -> set[str]:
        """Wait until a step ``s{at_least}`` or later is running; return the running steps."""
        deadline = time.monotonic() + timeout
        while True:
            running = self.running(run_id)
            if any(int(name[1:]) >= at_least for name in running):
                return running
            assert time.monotonic() < deadline, f"no step past s{at_least} running after {timeout}s"
            time.sleep(0.02)

    def stuck(self) -> list[tuple[str, str, str]]:
        """Steps of any run left ``running`` or ``queued``."""
        query = sa.text("SELECT run_id, step, status FROM step_runs WHERE status IN ('running', 'queued')")
        with self.repo.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]

    def stop(self) -> None:
        super().stop()
        for route in self.routes:
            route.pg.close()
            route.redis.close()


@pytest.fixture
def drill(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Drill]:
    instance = Drill(database_url, redis_url, tmp_path)
    yield instance
    instance.stop()
    instance.repo.engine.dispose()


def assert_recovered(drill: Drill, run_id: str, view: dict[str, object], in_flight: set[str], steps: int) -> None:
    """The run succeeded; each step's success is recorded once; only steps in flight during the
    fault ran again (by the ledger and by the store's attempts); nothing is left running or queued."""
    names = {f"s{i}" for i in range(steps)}
    assert view["status"] == "succeeded", view
    step_views: dict[str, dict[str, object]] = view["steps"]  # type: ignore[assignment]
    assert {n for n, s in step_views.items() if s["status"] == "succeeded"} == names
    with drill.repo.transaction() as tx:
        succeeded = [e["step"] for e in tx.history(run_id) if e["kind"] == "step.succeeded"]
    assert sorted(succeeded) == sorted(names), "each step's success is recorded exactly once"
    assert sorted(successful_attempts(drill, run_id)) == sorted(names), "a late result was recorded as well"
    starts = drill.ledger.starts()
    assert set(starts) == names
    rerun = {n for n, count in starts.items() if count > 1}
    assert rerun <= in_flight, f"re-executed {sorted(rerun)}, but only {sorted(in_flight)} were in flight"
    retried = {n for n, s in step_views.items() if int(s["attempts"]) > 1}  # type: ignore[call-overload]
    assert retried <= in_flight, f"claimed again {sorted(retried)}, but only {sorted(in_flight)} were in flight"
    assert drill.stuck() == []


def successful_attempts(drill: Drill, run_id: str) -> list[str]:
    """The step of each attempt recorded as succeeded."""
    a, s = t.attempts.c, t.step_runs.c
    query = sa.select(s.step).select_from(t.attempts.join(t.step_runs, a.step_run_id == s.id))
    with drill.repo.engine.connect() as c:
        return list(c.execute(query.where(s.run_id == run_id, a.status == "succeeded")).scalars())


def parent_of(pid: int) -> int:
    """The parent process id (a pool process's parent is its worker's main process)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
