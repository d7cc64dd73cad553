"""``orchestrator serve`` and ``orchestrator flower`` refuse to listen beyond loopback without credentials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "localhost"])
def test_no_token_no_public_bind(tmp_path: Path, host: str) -> None:
    result = serve(tmp_path, "--host", host, "--port", "0")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: refusing to listen on {host} with no ORCHESTRATOR_API_TOKENS")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_malformed_token_entry_is_named_without_its_secret(tmp_path: Path) -> None:
    result = serve(tmp_path, "--host", "0.0.0.0", ORCHESTRATOR_API_TOKENS="ops:root:hunter2")
    assert result.returncode == 2
    assert "'ops'" in result.stderr and "hunter2" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_flower_without_credentials_stays_on_loopback(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "FLOWER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "flower", "--address", "0.0.0.0", "--port=0"],
        env={**clean, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: refusing to start Flower on 0.0.0.0 without credentials")
    assert result.stderr.count("\n") == 1, result.stderr


def _call(url: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_embedded_default_runs_what_the_api_submits(tmp_path: Path) -> None:
    # Given `serve` with no broker configured (SQLite, the in-memory broker) and no token
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_TASK_MODULES": "tests.integration.steps"}
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while b"Uvicorn running" not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        api = f"http://127.0.0.1:{port}/api/v1"
        step = {"task": "tests.integration.steps:add", "with": {"a": 2, "b": 3}}
        definition = {"name": "adder", "steps": {"add": step}}
        assert _call(f"{api}/workflows", "POST", {"definition": definition})[0] == 201
        status, me = _call(f"{api}/me")
        assert status == 200 and me["role"] == "admin"  # type: ignore[index]
        # When a run is submitted over HTTP
        status, created = _call(f"{api}/runs", "POST", {"workflow": "adder"})
        assert status == 201
        run_id = created["run_id"]  # type: ignore[index]
        # Then the server's own worker runs it to the end
        while True:
            status, view = _call(f"{api}/runs/{run_id}")
            assert status == 200 and time.monotonic() < deadline + 30, view
            if view["status"] in ("succeeded", "failed", "cancelled"):  # type: ignore[index]
                break
            time.sleep(0.1)
        assert view["status"] == "succeeded" and view["steps"]["add"]["output"] == 5  # type: ignore[index]
        # And a 10 MB body is answered 413 (read and dropped first: the client sees the answer, not a reset)
        status, refused = _call(f"{api}/runs", "POST", {"workflow": "adder", "inputs": {"pad": "x" * 10_000_000}})
        assert status == 413 and "ORCHESTRATOR_MAX_PAYLOAD" in refused["error"]  # type: ignore[index]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
