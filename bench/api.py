"""event_notify: what the live-update trigger's NOTIFY (migration 0011, opted in with
``orchestrator.live_notify``) adds to logging one event (one ``INSERT`` and its ``COMMIT``, with
``synchronous_commit=off`` as a worker's claim commits, so the disk's flush does not hide it),
against the same with the trigger disabled, in alternating blocks, on one connection.
event_notify_concurrent: 8 writer processes, each on its own connection logging one event per
transaction for a few seconds, in commits per second: with no trigger (dropped), the trigger as
shipped (present, returning at once: the default), the trigger notifying (the opt-in), with
``synchronous_commit`` on and off (a NOTIFY's database-wide lock at commit serializes them).
api_*: the HTTP API's latency on a run of 1,000 steps (p50 and p95 of n requests per route), and
sse_fanout: 200 clients streaming one run while its steps end, each step's delay from its end in
the store (its ``finished_at``, taken before its transaction commits) to its arrival at each client.

Against ``orchestrator serve`` as a subprocess (its own process, as in production), our worker, and
the clients in this process. A route this branch does not serve yet prints ``skipped``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.env import ROOT, Services
from bench.runs import Ours, chain_plan
from orchestrator.definition import Plan, WorkflowBuilder, build_plan

LISTENER_NAME = "orchestrator-live"  # the application_name of the server's LISTEN connection
ROUTES = {
    "api_get_run": "/api/v1/runs/{id}",
    "api_get_run_attempts": "/api/v1/runs/{id}?attempts=true",
    "api_get_run_history": "/api/v1/runs/{id}/history",
    "api_get_runs": "/api/v1/runs",
}


@contextmanager
def server(services: Services) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``orchestrator serve`` on a free port; with a broker configured it runs no worker itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = services.logs / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
            env=services.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while b"Uvicorn running" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"orchestrator serve did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(url: str, name: str, route: str, run_id: str, n: int) -> dict[str, Any]:
    """p50 (``ours_s``) and p95 of ``n`` GETs of ``route`` (``{id}``: the run), one after another."""
    path = route.replace("{id}", run_id)
    with httpx.Client(base_url=url, timeout=60) as client:
        first = client.get(path)
        if first.status_code != 200:
            return {"name": name, "n": 0, "skipped": f"GET {route} answered {first.status_code} in this branch"}
        times = []
        for _ in range(n):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            times.append(time.perf_counter() - started)
    return {
        "name": name,
        "n": n,
        "ours_s": round(statistics.median(times), 5),
        "p95_s": round(percentile(times, 0.95), 5),
    }


def gated_chain(steps: int) -> Plan:
    """An approval, then a chain of ``steps`` 10 ms steps: the clients connect while it waits."""
    wf = WorkflowBuilder("bench-sse")
    previous = wf.approval("go")
    for i in range(steps):
        previous = wf.step(f"s{i}", "bench.tasks:work", needs=[previous], with_={"ms": 10})
    return build_plan(wf.build(), check_tasks=False)


class Client:
    """One stream: when each step was first seen succeeded, by this client's clock."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.seen: set[str] = set()
        self.ended = False

    async def follow(self, http: httpx.AsyncClient, url: str, ready: asyncio.Event, opened: list[int]) -> None:
        """Read the stream as raw bytes, split into events here (httpx's line iterator would cost
        this process more than the server spends sending)."""
        async with http.stream("GET", url) as response:
            pending = b""
            async for chunk in response.aiter_raw():
                at = time.time()
                *events, pending = (pending + chunk).split(b"\n\n")
                for event in events:
                    kind, _, data = event.partition(b"\ndata: ")
                    if kind == b"event: run":
                        opened.append(1)
                        await ready.wait()
                    elif kind == b"event: change":
                        self.note(json.loads(data), at)
                    elif kind == b"event: end":
                        self.ended = True

    def note(self, change: dict[str, Any], at: float) -> None:
        for name, step in change["steps"].items():
            if step["status"] == "succeeded" and name not in self.seen and name != "go":
                self.seen.add(name)
                self.delays.append(at - datetime.fromisoformat(step["finished_at"]).timestamp())


def listeners(database_url: str) -> int:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
        row = conn.execute(query, (LISTENER_NAME,)).fetchone()
    return int(row[0]) if row else 0


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak (Linux), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}


async def fanout(ours: Ours, url: str, process: subprocess.Popen[bytes], clients: int, steps: int) -> dict[str, Any]:
    from orchestrator.runtime import approval, operations

    run_id = operations.submit(ours.engine, gated_chain(steps), {}).run_id
    followers = [Client() for _ in range(clients)]
    ready, opened = asyncio.Event(), list[int]()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120), limits=limits) as http:
        stream = f"{url}/api/v1/runs/{run_id}/stream"
        tasks = [asyncio.create_task(c.follow(http, stream, ready, opened)) for c in followers]
        while len(opened) < clients:
            await asyncio.sleep(0.05)
        before = memory_mb(process.pid)
        connections = await asyncio.to_thread(listeners, ours.repo.engine.url.render_as_string(hide_password=False))
        ready.set()
        go = operations.Who("bench")
        await asyncio.to_thread(approval.decide, ours.engine, run_id, "go", go, "approved")
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
    delays = [d for c in followers for d in c.delays]
    after = memory_mb(process.pid)
    return {
        "name": "sse_fanout",
        "n": clients,
        "ours_s": round(statistics.median(delays), 4),
        "p95_s": round(percentile(delays, 0.95), 4),
        "max_s": round(max(delays), 4),
        "steps": steps,
        "samples": len(delays),
        "ended": sum(1 for c in followers if c.ended),
        "listener_connections": connections,
        "server_rss_mb": {"before": before["VmRSS"], "after": after["VmRSS"], "peak": after["VmHWM"]},
    }


def notify_cost(database_url: str, n: int, blocks: int = 4) -> dict[str, Any]:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    run_id = "bench-notify"
    timings: dict[bool, list[float]] = {True: [], False: []}
    with psycopg.connect(dsn, options="-c synchronous_commit=off") as conn:
        conn.execute("INSERT INTO definitions VALUES ('bench-notify', 'bench-notify', '{}', now())")
        conn.execute(
            "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
            "VALUES (%s, 'bench-notify', 'bench-notify', 'running', '{}', now())",
            (run_id,),
        )
        conn.commit()
        conn.execute("SET orchestrator.live_notify = on")
        for block in range(2 * blocks):
            on = block % 2 == 0
            conn.execute(f"ALTER TABLE events {'ENABLE' if on else 'DISABLE'} TRIGGER events_notify")
            conn.commit()
            for _ in range(n // blocks):
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO events (run_id, step, kind, at) VALUES (%s, 's', 'step.running', now())", (run_id,)
                )
                conn.commit()
                timings[on].append(time.perf_counter() - started)
        conn.execute("ALTER TABLE events ENABLE TRIGGER events_notify")
        conn.commit()
    with_trigger, without = statistics.median(timings[True]), statistics.median(timings[False])
    return {
        "name": "event_notify",
        "n": n,
        "baseline_s": round(without, 6),
        "ours_s": round(with_trigger, 6),
        "ratio": round(with_trigger / without, 2),
    }


def _0011_trigger() -> str:
    """The ``CREATE TRIGGER`` of migration 0011, as it ships."""
    import importlib.util

    path = ROOT / "orchestrator" / "store" / "migrations" / "versions" / "0011_event_notify.py"
    spec = importlib.util.spec_from_file_location("migration_0011", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module._TRIGGER)


_MODES = {"no_trigger": None, "trigger_default": "off", "trigger_notify": "on"}


def _writer(dsn: str, options: str, run_id: str, start: Any, seconds: float, counts: Any, slot: int) -> None:
    """One writer process: insert one event and commit, for ``seconds`` after ``start``."""
    with psycopg.connect(dsn, options=options) as conn:
        start.wait()
        deadline, done = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline:
            conn.execute(
                "INSERT INTO events (run_id, step, kind, at) VALUES (%s, 's', 'step.running', now())", (run_id,)
            )
            conn.commit()
            done += 1
        counts[slot] = done


def _pgbench(dsn: str, options: str, clients: int, seconds: float) -> float:
    """pgbench (a C client: the clients' own cost stays small) running one insert per transaction."""
    import re
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(
            f"\\set r random(0, {clients - 1})\n"
            "INSERT INTO events (run_id, step, kind, at) VALUES ('bench-notify-' || :r, 's', 'step.running', now());\n"
        )
        script.flush()
        result = subprocess.run(
            [
                "pgbench",
                "-n",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(int(seconds)),
                "-f",
                script.name,
                dsn,
            ],
            env={**os.environ, "PGOPTIONS": options},
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"tps = ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    return float(found.group(1))


def _commits_per_s(dsn: str, options: str, clients: int, seconds: float) -> float:
    import multiprocessing
    import shutil

    if shutil.which("pgbench"):
        return _pgbench(dsn, options, clients, seconds)

    context = multiprocessing.get_context("spawn")
    start, counts = context.Event(), context.Array("q", clients)
    writers = [
        context.Process(target=_writer, args=(dsn, options, f"bench-notify-{i}", start, seconds, counts, i))
        for i in range(clients)
    ]
    for writer in writers:
        writer.start()
    time.sleep(1.0)  # every writer connected
    start.set()
    for writer in writers:
        writer.join()
    return sum(counts) / seconds


def notify_contention(database_url: str, seconds: float, clients: int = 8, rounds: int = 3) -> Iterator[dict[str, Any]]:
    import shutil

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO definitions VALUES ('bench-nc', 'bench-nc', '{}', now()) ON CONFLICT DO NOTHING")
        for i in range(clients):
            conn.execute(
                "INSERT INTO runs (id, workflow, version, status, inputs, created_at) "
                "VALUES (%s, 'bench-nc', 'bench-nc', 'running', '{}', now()) ON CONFLICT DO NOTHING",
                (f"bench-notify-{i}",),
            )
    for synchronous in ("on", "off"):
        tps: dict[str, list[float]] = {mode: [] for mode in _MODES}
        for _ in range(rounds):
            for mode, live_notify in _MODES.items():
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("DROP TRIGGER IF EXISTS events_notify ON events")
                    if live_notify is not None:
                        conn.execute(_0011_trigger())
                options = f"-c synchronous_commit={synchronous}"
                if live_notify is not None:
                    options += f" -c orchestrator.live_notify={live_notify}"
                tps[mode].append(_commits_per_s(dsn, options, clients, seconds))
        best = {mode: round(max(values)) for mode, values in tps.items()}
        yield {
            "name": "event_notify_concurrent",
            "n": clients,
            "seconds": seconds,
            "synchronous_commit": synchronous,
            "client": "pgbench" if shutil.which("pgbench") else "psycopg processes",
            "tps": {mode: [round(v) for v in values] for mode, values in tps.items()},
            "baseline_s": round(1 / best["no_trigger"], 7),
            "ours_s": round(1 / best["trigger_default"], 7),
            "ratio": round(best["no_trigger"] / best["trigger_default"], 2),
            "notify_ratio": round(best["no_trigger"] / best["trigger_notify"], 2),
        }
    with psycopg.connect(dsn, autocommit=True) as conn:  # as migrated
        conn.execute("DROP TRIGGER IF EXISTS events_notify ON events")
        conn.execute(_0011_trigger())


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    yield notify_cost(services.database_url, 400 if quick else 2000)
    yield from notify_contention(services.database_url, 2.0 if quick else 5.0)
    steps, requests = (100, 50) if quick else (1000, 200)
    clients, fan_steps = (50, 30) if quick else (200, 100)
    with services.worker("ours"), server(services) as (url, process):
        ours = Ours()
        ours.run(chain_plan(steps, "bench-api"), [{}], 600)
        with ours.repo.transaction() as tx:
            [big] = tx.runs(None, "bench-api", 1)
        for name, route in ROUTES.items():
            yield {**latency(url, name, route, big.id, requests), "steps": steps}
        yield asyncio.run(fanout(ours, url, process, clients, fan_steps))


if __name__ == "__main__":  # python -m bench.api: the event_notify cases alone (full sizes)
    from bench.env import services

    with services() as svc:
        for line in [notify_cost(svc.database_url, 2000), *notify_contention(svc.database_url, 5.0)]:
            print(json.dumps(line), flush=True)
