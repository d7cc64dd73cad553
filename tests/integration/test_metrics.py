"""``/metrics`` after known runs on real prefork workers: the counts are the runs' (whichever
process ran each step), labels are workflow and step names, and the server's bind and token rules."""

from __future__ import annotations

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

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.runtime.views import run_view
from tests.conftest import ROOT, Cluster, write_workflow

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"

METERED = """
name: metered
steps:
  first: {task: tests.integration.steps:add, with: {a: 1, b: 2}}
  second: {needs: [first], task: tests.integration.steps:nap, with: {seconds: 0.05}}
"""
BROKEN = """
name: broken
breakers:
  pay-api: {fail_max: 5, reset_timeout: 30s}
steps:
  fetch: {task: tests.integration.steps:add, with: {a: 1, b: 1}}
  charge:
    needs: [fetch]
    task: tests.integration.steps:fail
    breaker: pay-api
    retry: {max_attempts: 2, delay: 100ms, backoff: fixed}
"""
GATED = """
name: gated
steps:
  sign-off: {approval: {}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**cluster.env, "ORCHESTRATOR_API_TOKENS": f"prom:viewer:{TOKEN}"}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while b"Uvicorn running" not in (tmp_path / "serve.log").read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(20)


def scrape(url: str, token: str | None = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    request = urllib.request.Request(f"{url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_the_runs_of_every_worker_process(cluster: Cluster, tmp_path: Path, server: str) -> None:
    # Given two prefork workers of two processes each, three good runs, one failing run and one waiting
    cluster.start_worker(concurrency=2)
    cluster.start_worker(concurrency=2)
    good = [cluster.start(write_workflow(tmp_path, METERED, "metered.yaml")) for _ in range(3)]
    bad = cluster.start(write_workflow(tmp_path, BROKEN, "broken.yaml"))
    waiting = cluster.start(write_workflow(tmp_path, GATED, "gated.yaml"))
    assert [cluster.wait(r)["status"] for r in good] == ["succeeded"] * 3
    assert cluster.wait(bad)["status"] == "failed"
    deadline = time.monotonic() + 30
    while run_view(cluster.repo, waiting)["steps"]["sign-off"]["status"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # When Prometheus scrapes the server, which runs no step itself
    got = scrape(server)

    def value(metric: str, /, **labels: str) -> float | None:
        return got.get((metric, tuple(sorted(labels.items()))))

    # Then the counts are the runs', summed over every process that ran them
    assert value("orchestrator_runs_total", workflow="metered", status="succeeded") == 3
    assert value("orchestrator_runs_total", workflow="broken", status="failed") == 1
    assert value("orchestrator_runs_active", workflow="gated", status="running") == 1
    assert value("orchestrator_steps_total", workflow="metered", step="first", status="succeeded") == 3
    assert value("orchestrator_steps_total", workflow="metered", step="second", status="succeeded") == 3
    assert value("orchestrator_steps_total", workflow="broken", step="charge", status="failed") == 1
    assert value("orchestrator_step_duration_seconds_count", workflow="metered", step="second") == 3
    assert value("orchestrator_step_duration_seconds_count", workflow="broken", step="charge") == 2  # two attempts
    assert value("orchestrator_step_duration_seconds_bucket", workflow="metered", step="second", le="0.01") == 0
    assert value("orchestrator_step_duration_seconds_bucket", workflow="metered", step="second", le="+Inf") == 3
    second_sum = value("orchestrator_step_duration_seconds_sum", workflow="metered", step="second")
    assert second_sum is not None and second_sum >= 3 * 0.05
    assert value("orchestrator_step_queue_seconds_count", workflow="metered") == 6
    assert value("orchestrator_dead_letters_open") == 1
    assert value("orchestrator_approvals_waiting") == 1
    assert value("orchestrator_breaker_open", name="pay-api") == 0
    # Labels are bounded: no run id appears in any series
    assert not any(run_id in str(key) for key in got for run_id in [*good, bad, waiting])


def test_metrics_need_the_bearer_token_when_tokens_are_configured(server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(server, token=None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        scrape(server, token="not-it")
    assert wrong.value.code == 401
    assert ("orchestrator_dead_letters_open", ()) in scrape(server)
    with urllib.request.urlopen(f"{server}/api/v1/openapi.json", timeout=10) as response:
        assert b'"openapi"' in response.read()
