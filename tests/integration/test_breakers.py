"""A circuit breaker shared by two worker processes, against a local HTTP server that counts calls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Cluster

pytestmark = pytest.mark.integration


class Service:
    """Answers 503 until made healthy; records when each call started and ended."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                started = time.time()
                time.sleep(0.2)
                ok = service.healthy
                body = json.dumps({"ok": ok}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with service.lock:
                    service.calls.append((started, time.time()))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/charge"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.calls)


@pytest.fixture
def service() -> Iterator[Service]:
    instance = Service()
    yield instance
    instance.server.shutdown()


def breaker_state(cluster: Cluster) -> dict[str, object] | None:
    result = cluster.cli("breakers", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout) if r["name"] == "flaky-api"]
    return rows[0] if rows else None


def test_breaker_opens_after_fail_max_across_two_workers_then_admits_one_trial(
    cluster: Cluster, service: Service, tmp_path: Path
) -> None:
    path = tmp_path / "guarded.yaml"
    path.write_text(f"""
name: guarded
inputs: {{type: object, properties: {{items: {{type: array}}}}}}
breakers:
  flaky-api: {{fail_max: 3, reset_timeout: 3s}}
steps:
  call:
    foreach: "${{{{ inputs.items }}}}"
    concurrency: 4
    task: orchestrator.steps.http:request
    with: {{url: "{service.url}?item=${{{{ item }}}}", timeout: 5}}
    breaker: flaky-api
    retry: {{max_attempts: 30, backoff: fixed, delay: 200ms, jitter: false, retry_on: [ConnectionError]}}
""")
    cluster.start_worker(concurrency=2, name="left")
    cluster.start_worker(concurrency=2, name="right")
    run_id = cluster.start(path, items=list(range(6)))
    # When the service fails, the breaker opens once fail_max failures are counted across the fleet
    deadline = time.monotonic() + 30
    while (state := breaker_state(cluster)) is None or state["state"] != "open":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    opened_at = datetime.fromisoformat(str(state["opened_at"])).timestamp()
    assert state["failures"] >= 3
    assert datetime.fromisoformat(str(state["next_trial_at"])).timestamp() == pytest.approx(opened_at + 3, abs=0.01)
    # Then no call reaches the service while the breaker is open (calls already in flight may land)
    while time.time() < opened_at + 3:
        time.sleep(0.1)
    with service.lock:
        during = [start for start, _ in service.calls if opened_at + 0.3 < start < opened_at + 2.9]
    assert during == [], "a call was made while the breaker was open"
    # When the service recovers, exactly one trial call goes first, alone, after the reset timeout
    service.healthy = True
    view = cluster.wait(run_id, timeout=60)
    assert view["status"] == "succeeded", (view["error"], view["steps"])
    after = sorted(c for c in service.calls if c[0] > opened_at + 0.5)
    trial, rest = after[0], after[1:]
    assert trial[0] >= opened_at + 2.9
    assert all(start >= trial[1] for start, _ in rest), "another call overlapped the half-open trial"
    # And waiting on the breaker burned no retry: every recorded attempt is a call the service saw
    with cluster.repo.transaction() as tx:
        attempts = sum(item.attempts for item in tx.items(run_id, "call"))
    assert attempts == len(service.calls)
    closed = breaker_state(cluster)
    assert closed is not None and (closed["state"], closed["failures"]) == ("closed", 0)
    reset = cluster.cli("breakers", "reset", "flaky-api")
    assert reset.returncode == 0 and reset.stdout.strip() == "breaker flaky-api reset to closed"
