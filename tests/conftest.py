"""Service fixtures: real PostgreSQL, real Redis, real worker processes.

A test that needs a service skips when it is missing on a laptop, and fails when CI=true.
Each test gets a fresh PostgreSQL database cloned from a migrated template, and a Redis
database that is flushed before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ORCHESTRATOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("ORCHESTRATOR_TEST_REDIS", "redis://127.0.0.1:6379")
_CLAIM_KEY = "orchestrator-test:claimed-by"
IN_CI = os.environ.get("CI") == "true"
# The test suite's own step modules (tests.*) are allowed, in this process and in every worker and
# CLI run it starts (they inherit the environment); a test of the allowlist sets its own.
os.environ["ORCHESTRATOR_TASK_MODULES"] = "tests"


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: integration tests must run)")
    pytest.skip(message)


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)


def _sqlalchemy_url(database: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _drop(database: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that each test's database is cloned from."""
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {PG_ADMIN}", exc)
    name = f"orch_tmpl_{os.getpid()}"
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    from orchestrator.store.database import get_engine
    from orchestrator.store.migrate import upgrade

    url = _sqlalchemy_url(name)
    upgrade(url)
    get_engine(url).dispose()
    yield name
    _drop(name)


@pytest.fixture
def database_url(pg_template: str) -> Iterator[str]:
    name = f"orch_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = _sqlalchemy_url(name)
    yield url
    from orchestrator.store.database import dispose_engines

    dispose_engines(url)
    _drop(name)


@pytest.fixture(scope="session")
def redis_db() -> Iterator[str]:
    """A Redis database of its own for this test session: the first empty one, claimed with a key
    that expires, so two test runs on one server never share (or flush) each other's."""
    base = REDIS_SERVER.rstrip("/")
    if base.count("/") > 2:  # a database was named: use it as it is
        base = base.rsplit("/", 1)[0]
    try:
        redis.Redis.from_url(f"{base}/0").ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {base}", exc)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.dbsize() == 0 and client.set(_CLAIM_KEY, token, nx=True, ex=6 * 3600):
            yield f"{base}/{db}"
            client.flushdb()
            return
    pytest.fail(f"no free Redis database on {base} for this test session")


@pytest.fixture
def redis_url(redis_db: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_db)
    claim = client.get(_CLAIM_KEY)
    client.flushdb()
    client.set(_CLAIM_KEY, claim or b"", ex=6 * 3600)
    yield redis_db
    client.flushdb()
    client.set(_CLAIM_KEY, claim or b"", ex=6 * 3600)


class Cluster:
    """The distributed setup of one test: its database, its broker, its worker processes."""

    grace_s = 20.0  # how long stop() lets workers finish a warm shutdown before killing them

    def __init__(self, database_url: str, broker_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.workdir = workdir
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_BROKER_URL": broker_url,
            "ORCHESTRATOR_TASK_MODULES": "tests.integration.steps,tests",  # imported by the workers; any tests.*
            "ORCHESTRATOR_RECONCILE_INTERVAL_S": "0.5",
            "ORCHESTRATOR_RECONCILE_STALE_S": "3",
            "ORCHESTRATOR_LEASE_S": "2",
            "PYTHONPATH": str(ROOT),
        }
        from orchestrator.store import Repository

        self.repo = Repository.from_url(database_url)

    def start_worker(
        self,
        *args: str,
        concurrency: int = 2,
        name: str | None = None,
        env: dict[str, str] | None = None,
        quiet: bool = True,
        prefix: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """A worker process; ``quiet=False`` keeps mingle and gossip on, as the Procfile runs it;
        ``prefix`` runs it through another command (e.g. in a network namespace)."""
        name = name or f"w{len(self.workers)}"
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "orchestrator",
                "worker",
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                *(["--without-mingle", "--without-gossip"] if quiet else []),
                "--loglevel",
                "INFO",
                *args,
            ],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        deadline = time.monotonic() + 30
        while b" ready." not in (self.workdir / f"{name}.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{self.log(name)}")
            time.sleep(0.1)
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children: a crash, not a shutdown."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        """SIGTERM every worker, then SIGKILL those still up once ``grace_s`` has passed (one
        deadline for all of them, not one each)."""
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for process in self.workers:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    def start(self, workflow: Path | str, **inputs: Any) -> str:
        args = [
            f"-i{key}={value if isinstance(value, str) else __import__('json').dumps(value)}"
            for key, value in inputs.items()
        ]
        result = self.cli("run", str(workflow), "--detach", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        from orchestrator.runtime.views import run_view

        deadline = time.monotonic() + timeout
        while True:
            view = run_view(self.repo, run_id, with_attempts=True)
            if view["status"] in ("succeeded", "failed", "cancelled"):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {view['status']} after {timeout}s: {view['steps']}")
            time.sleep(0.1)


@pytest.fixture
def cluster(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    instance = Cluster(database_url, redis_url, tmp_path)
    yield instance
    instance.stop()
    instance.repo.engine.dispose()


def write_workflow(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    """Write a workflow file for a test and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return path
