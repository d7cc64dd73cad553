"""The bench's own services: a temporary PostgreSQL database, an empty Redis database, workers.

Everything is created here and removed on exit, so the servers are left as they were found.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKER_CONCURRENCY = 2
WORKER_FLAGS = [
    "-P",
    "prefork",
    "-c",
    str(DEFAULT_WORKER_CONCURRENCY),
    "--without-mingle",
    "--without-gossip",
    "--without-heartbeat",
    "--loglevel",
    "WARNING",
]


class Services:
    def __init__(self, database_url: str, broker_url: str) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.redis = redis.Redis.from_url(broker_url)
        self.env = {
            **os.environ,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_BROKER_URL": broker_url,
            "ORCHESTRATOR_TASK_MODULES": "bench.tasks",
            "BENCH_BROKER_URL": broker_url,
            "PYTHONPATH": str(ROOT),
        }
        self.logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))

    @contextmanager
    def worker(self, side: str, concurrency: int = DEFAULT_WORKER_CONCURRENCY) -> Iterator[subprocess.Popen[bytes]]:
        """Our worker (``orchestrator worker``) or the baseline's, with the same flags; the main
        process is yielded (its pool children share its process group) so a case can watch it."""
        flags = [*WORKER_FLAGS]
        flags[flags.index("-c") + 1] = str(concurrency)
        if side == "ours":
            command = [sys.executable, "-m", "orchestrator", "worker", *flags]
        else:
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.tasks:baseline",
                "worker",
                "-Q",
                "bench-baseline",
                *flags,
            ]
        log_path = self.logs / f"{side}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command + ["--loglevel", "INFO"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while b" ready." not in log_path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{side} worker did not start: {log_path.read_text()}")
                time.sleep(0.05)
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _pick_empty_redis_db(base_url: str) -> str:
    url = make_url(base_url.replace("redis://", "redis+x://", 1))
    host, port = url.host or "127.0.0.1", url.port or 6379
    for db in range(15, 0, -1):
        client = redis.Redis(host=host, port=port, db=db, password=url.password)
        if client.dbsize() == 0:
            return f"redis://{':' + url.password + '@' if url.password else ''}{host}:{port}/{db}"
    raise RuntimeError(f"no empty Redis database on {host}:{port} for the bench")


@contextmanager
def services() -> Iterator[Services]:
    database = os.environ.get("ORCHESTRATOR_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    broker = os.environ.get("ORCHESTRATOR_BROKER_URL", "redis://127.0.0.1:6379/0")
    server = make_url(database)
    if server.get_backend_name() != "postgresql":
        raise SystemExit(
            "the benchmarks run against PostgreSQL: set ORCHESTRATOR_DATABASE_URL=postgresql+psycopg://..."
        )
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"orch_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis_url = _pick_empty_redis_db(broker)
    os.environ["ORCHESTRATOR_DATABASE_URL"] = server.set(database=name).render_as_string(hide_password=False)
    os.environ["ORCHESTRATOR_BROKER_URL"] = redis_url
    os.environ["BENCH_BROKER_URL"] = redis_url
    from orchestrator.settings import get_settings

    get_settings.cache_clear()  # a case without services (compile) may have read the settings already
    try:
        from orchestrator.store.migrate import upgrade

        upgrade(os.environ["ORCHESTRATOR_DATABASE_URL"])
        yield Services(os.environ["ORCHESTRATOR_DATABASE_URL"], redis_url)
    finally:
        from orchestrator.store.database import dispose_engines

        dispose_engines()
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
