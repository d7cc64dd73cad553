"""Shared set-up of the HTTP API tests: a PostgreSQL database per test module (cloned from the
migrated template), an app over it with one token per role, and for the modules whose runs must
progress a real worker process on Redis, with this process's Celery app publishing to it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.api.tokens import parse_tokens
from orchestrator.runtime.views import run_view
from orchestrator.settings import get_settings
from orchestrator.store import Repository
from tests.conftest import Cluster, _admin, _drop, _sqlalchemy_url

TOKENS = {"viewer": "tok-viewer-1", "operator": "tok-operator-2", "admin": "tok-admin-3"}
NAMES = {"viewer": "vera", "operator": "otto", "admin": "ada"}
TOKEN_TEXT = ",".join(f"{NAMES[r]}:{r}:{t}" for r, t in TOKENS.items())
STEPS = "tests.integration.steps"


def auth(role: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}


@pytest.fixture(scope="module")
def module_db(pg_template: str) -> Iterator[str]:
    """A fresh database for the whole module (the per-test ``database_url`` costs a clone each)."""
    name = f"orch_api_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = _sqlalchemy_url(name)
    yield url
    from orchestrator.store.database import dispose_engines

    dispose_engines(url)
    _drop(name)


def _configure(env: dict[str, str | None]) -> dict[str, str | None]:
    """Set these variables (None: unset) and read the settings again; the previous values."""
    before = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    return before


def _point_celery(broker: str | None) -> None:
    """This process's Celery app publishes to ``broker`` (None: the embedded in-memory one)."""
    from orchestrator.worker.app import app, celery_config

    app.conf.update(celery_config(get_settings()))
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(scope="module")
def embedded_app(module_db: str) -> Iterator[Any]:
    """The app over the module's database with no broker: messages go to this process's memory
    broker, where no worker listens (actions are decided and recorded; no step runs)."""
    before = _configure({"ORCHESTRATOR_DATABASE_URL": module_db, "ORCHESTRATOR_BROKER_URL": None})
    _point_celery(None)
    repo = Repository.from_url(module_db)
    app = create_app(repo, lambda: [], parse_tokens(TOKEN_TEXT), 0.0)
    yield app
    _configure(before)
    _point_celery(None)


@pytest.fixture(scope="module")
def api_cluster(module_db: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One worker process on Redis for the module, and this process configured to publish to it."""
    import redis

    redis.Redis.from_url(redis_db).flushdb()
    cluster = Cluster(module_db, redis_db, tmp_path_factory.mktemp("api"))
    before = _configure(
        {
            "ORCHESTRATOR_DATABASE_URL": module_db,
            "ORCHESTRATOR_BROKER_URL": redis_db,
            "ORCHESTRATOR_TASK_MODULES": cluster.env["ORCHESTRATOR_TASK_MODULES"],
        }
    )
    _point_celery(redis_db)
    cluster.start_worker(concurrency=4)
    yield cluster
    cluster.stop()
    cluster.repo.engine.dispose()
    _configure(before)
    _point_celery(None)


@pytest.fixture(scope="module")
def cluster_app(api_cluster: Cluster) -> Any:
    return create_app(Repository.from_url(api_cluster.database_url), lambda: [], parse_tokens(TOKEN_TEXT), 0.0)


def client_for(app: Any) -> TestClient:
    """A client reaching the app as a loopback host, sending every request as JSON (the API
    refuses a write declaring anything else)."""
    return TestClient(
        app, base_url="http://127.0.0.1", headers={"Content-Type": "application/json"}, raise_server_exceptions=False
    )


def register(client: TestClient, text: str) -> dict[str, Any]:
    answer = client.post("/api/v1/workflows", json={"definition": text}, headers=auth("admin"))
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(
    repo: Repository, run_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """The run's view once ``done`` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        view = run_view(repo, run_id)
        if done(view):
            return view
        assert time.monotonic() < deadline, f"run {run_id}: {view['status']} {view['steps']}"
        time.sleep(0.1)


def ended(view: dict[str, Any]) -> bool:
    return view["status"] in ("succeeded", "failed", "cancelled")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
