"""Flower speaks in workflows: a step's task is listed as ``workflow.step`` with readable
arguments (run, step, attempt), behind basic auth."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Cluster, write_workflow

pytestmark = pytest.mark.integration
CREDENTIALS = "ops:flower-secret"
WORKFLOW = """
name: shop-flow
steps:
  fetch: {task: tests.integration.steps:add, with: {a: 1, b: 2}}
  charge: {needs: [fetch], task: tests.integration.steps:echo, with: {value: "${{ steps.fetch.output }}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flower(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "flower", f"--port={port}"],
        env={**cluster.env, "FLOWER_BASIC_AUTH": CREDENTIALS},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthcheck", timeout=2):
                break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
            time.sleep(0.2)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def api(url: str, path: str, auth: str | None = CREDENTIALS) -> Any:
    request = urllib.request.Request(f"{url}{path}")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def seen(url: str, run_id: str) -> dict[str, Any]:
    """Flower's tasks named shop-flow.charge of this run, waiting a little for its events to arrive."""
    until = time.monotonic() + 5
    while True:
        tasks = {k: t for k, t in api(url, "/api/tasks?taskname=shop-flow.charge").items() if run_id in t["kwargs"]}
        if tasks or time.monotonic() > until:
            return tasks
        time.sleep(0.3)


def test_flower_lists_a_step_under_its_workflow_name(cluster: Cluster, flower: str, tmp_path: Path) -> None:
    # Given a live worker that Flower has turned task events on for (every step a message: a step
    # run in-process after the one delivered is not a Celery task, and Flower sees tasks only)
    cluster.start_worker(concurrency=1, env={"ORCHESTRATOR_LOCAL_STEPS": "0"})
    deadline = time.monotonic() + 60
    while not api(flower, "/api/workers?refresh=1"):
        assert time.monotonic() < deadline, "Flower never saw the worker"
        time.sleep(0.5)
    # When a run goes through (again, until one ran after Flower turned the worker's events on)
    while True:
        run_id = cluster.start(write_workflow(tmp_path, WORKFLOW))
        assert cluster.wait(run_id)["status"] == "succeeded"
        tasks = seen(flower, run_id)
        if tasks:
            break
        assert time.monotonic() < deadline, api(flower, "/api/tasks")
    # Then Flower lists each step as workflow.step, with the run, the step and the attempt readable
    (task,) = tasks.values()
    assert task["name"] == "shop-flow.charge"
    assert task["kwargs"] == repr({"run": run_id, "step": "charge", "attempt": 1})
    assert task["args"].startswith("(") and task["state"] in ("RECEIVED", "STARTED", "SUCCESS")
    assert "shop-flow.fetch" in {t["name"] for t in api(flower, "/api/tasks").values()}


def test_flower_wants_the_credentials(flower: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        api(flower, "/api/tasks", auth=None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        api(flower, "/api/tasks", auth="ops:guess")
    assert wrong.value.code == 401
