"""drills: the chaos drills of tests/chaos, measured (``python -m bench drills``; never in the default run).

Each drill runs a chain whose steps write a ledger, injects its fault through the proxies of
tests/chaos (or a SIGKILL, or a host's link going down) and reports: ``takeover_s``, from the
start of the fault until the run records its next step success; ``recover_s``, from the end of
the fault until its next success (null when the run had finished before the fault ended);
``reexecuted``, step executions beyond one per step, by the ledger; ``lost``, steps that did not
succeed (must be 0); ``stuck``, steps left running or queued; ``run_s``, from the start of the run to its end.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.env import Services
from orchestrator.store import tables as t
from tests.chaos.conftest import Drill
from tests.chaos.hosts import Host, namespaces_unavailable
from tests.chaos.proxy import BLACKHOLE, PASS, REFUSE

STEPS = 20
STEP_S = 0.5
FAULT_AT_STEP = 3


def _progress(drill: Drill, run_id: str) -> tuple[int, str]:
    """How many steps of the run succeeded, and its status."""
    s = t.step_runs.c
    with drill.repo.engine.connect() as c:
        done = sa.select(sa.func.count()).where(s.run_id == run_id, s.status == "succeeded")
        status = sa.select(t.runs.c.status).where(t.runs.c.id == run_id)
        return int(c.execute(done).scalar_one()), str(c.execute(status).scalar_one())


def _measure(svc: Services, name: str, fault: Callable[[Drill, str], float], setup: Callable[[Drill], None]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-drill-{name}-"))
    drill = Drill(svc.database_url, svc.broker_url, workdir)
    try:
        setup(drill)
        started = time.monotonic()
        run_id = drill.start(drill.chain(STEPS, STEP_S, name=f"drill-{name}"))
        drill.wait_until_running(run_id, at_least=FAULT_AT_STEP)
        window: dict[str, float] = {"start": time.monotonic()}
        injector = threading.Thread(target=lambda: window.update(end=window["start"] + fault(drill, run_id)))
        injector.start()
        successes: list[float] = []  # when each success after the fault's start was seen
        count, status = _progress(drill, run_id)
        while status not in ("succeeded", "failed", "cancelled") and time.monotonic() - started < 300:
            time.sleep(0.02)
            now_count, status = _progress(drill, run_id)
            successes += [time.monotonic()] * (now_count - count)
            count = now_count
        run_s = time.monotonic() - started
        injector.join()
        after_end = [at for at in successes if at >= window["end"]]
        return {
            "case": f"drill_{name}",
            "fault_s": round(window["end"] - window["start"], 1),
            "takeover_s": round(successes[0] - window["start"], 2) if successes else None,
            "recover_s": round(after_end[0] - window["end"], 2) if after_end else None,
            "reexecuted": sum(n - 1 for n in drill.ledger.starts().values()),
            "lost": STEPS - count,
            "run_s": round(run_s, 1),
            "status": status,
            "stuck": len(drill.stuck()),
        }
    finally:
        drill.stop()
        drill.repo.engine.dispose()


def _outage(which: str, mode: str, seconds: float) -> Callable[[Drill, str], float]:
    def fault(drill: Drill, run_id: str) -> float:
        route = drill.routes[0]
        proxy = route.pg if which == "pg" else route.redis if which == "redis" else None
        if proxy is None:
            route.set_mode(mode)
        else:
            proxy.set_mode(mode)
        time.sleep(seconds)
        route.set_mode(PASS)
        return seconds

    return fault


def _one_worker(drill: Drill) -> None:
    drill.start_worker(concurrency=2, name="w", env=drill.route().env, quiet=False)


def _two_workers(drill: Drill) -> None:
    for name in ("a", "b"):
        drill.start_worker(concurrency=2, name=name, env=drill.route().env)


def _kill(drill: Drill, run_id: str) -> float:
    drill.kill(drill.workers[0])
    drill.start_worker(concurrency=2, name="rescuer")
    return 0.0


def _victim_route(drill: Drill, run_id: str) -> int:
    running = max(drill.running(run_id) or {"s0"}, key=lambda n: int(n[1:]))
    name = drill.runner(running, {str(i): w for i, w in enumerate(drill.workers)})
    return int(name)


def _partition(seconds: float) -> Callable[[Drill, str], float]:
    def fault(drill: Drill, run_id: str) -> float:
        route = drill.routes[_victim_route(drill, run_id)]
        route.set_mode(BLACKHOLE)
        time.sleep(seconds)
        route.set_mode(PASS)
        return seconds

    return fault


def _hosts_cut(hosts: list[Host], seconds: float) -> tuple[Callable[[Drill], None], Callable[[Drill, str], float]]:
    def setup(drill: Drill) -> None:
        for host in hosts:
            env = drill.route(listen_host=host.address).env
            drill.start_worker(concurrency=2, name=host.hostname, env=env, prefix=host.prefix())

    def fault(drill: Drill, run_id: str) -> float:
        host = hosts[_victim_route(drill, run_id)]
        host.cut()
        time.sleep(seconds)
        host.restore()
        return seconds

    return setup, fault


def run(svc: Services, quick: bool) -> Iterator[dict[str, Any]]:
    yield _measure(svc, "redis_refused", _outage("redis", REFUSE, 15), _one_worker)
    yield _measure(svc, "postgres_refused", _outage("pg", REFUSE, 30), _one_worker)
    yield _measure(svc, "half_open", _partition(60), _two_workers)
    yield _measure(svc, "sigkill", _kill, lambda drill: drill.start_worker(concurrency=2, name="victim"))
    reason = namespaces_unavailable()
    if reason is not None:
        yield {"case": "drill_host_cut", "skipped": reason}
        return
    hosts = [Host("h1"), Host("h2")]
    try:
        setup, fault = _hosts_cut(hosts, 12)
        yield _measure(svc, "host_cut", fault, setup)
    finally:
        for host in hosts:
            host.close()
