"""The Procfile and docker-compose.yml: every command exists and starts; the Procfile runs for real."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Cluster

NAMES = {"worker", "beat", "flower"}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose() -> dict[str, dict[str, object]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def entry_point(command: str) -> list[str]:
    """The program and subcommand of a command line (``celery -A app flower``, ``orchestrator db upgrade``)."""
    words = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))
    if words[0] == "celery":
        return words[:4]
    return list(itertools.takewhile(lambda word: not word.startswith("-"), words))


def test_process_names_match_across_procfile_and_compose() -> None:
    services = compose()
    assert set(procfile()) == NAMES
    assert NAMES | {"postgres", "redis", "migrate"} == set(services)
    for name in ("postgres", "redis", "worker", "flower"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == "orchestrator db upgrade"


@pytest.mark.parametrize(
    "command",
    sorted({*procfile().values(), *(str(s["command"]) for s in compose().values() if "command" in s)}),
)
def test_every_command_exists_and_starts(command: str) -> None:
    head = entry_point(command)
    result = subprocess.run(
        [*head, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, (head, result.stderr)
    assert "Usage" in result.stdout or "usage" in result.stdout


@pytest.mark.integration
def test_procfile_runs_for_real_with_honcho(cluster: Cluster, tmp_path: Path) -> None:
    env = {
        **cluster.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start", "-p", "5700"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in (tmp_path / "honcho.log").read_bytes():
            assert honcho.poll() is None and time.monotonic() < deadline, (tmp_path / "honcho.log").read_text()
            time.sleep(0.2)
        result = cluster.cli("run", str(ROOT / "config/examples/fork-join.yaml"), "-i", "base=1", "--json")
        assert result.returncode == 0, result.stderr
        assert '"status": "succeeded"' in result.stdout
        # Flower answers on the port honcho gave it (base + 200 for the third process)
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:5900/healthcheck", timeout=2) as response:
                    assert response.read() == b"OK"
                    break
            except OSError:
                assert time.monotonic() < deadline + 30, (tmp_path / "honcho.log").read_text()
                time.sleep(0.3)
        # Beat sends the periodic reconciler (every 0.5 s in this environment)
        while "Sending due task orchestrator-reconcile" not in (tmp_path / "honcho.log").read_text():
            assert time.monotonic() < deadline + 30, (tmp_path / "honcho.log").read_text()
            time.sleep(0.3)
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(10)
    assert honcho.returncode is not None
    # Beat's schedules live in the state store: no celerybeat-schedule file is written
    assert not list(tmp_path.glob("celerybeat-schedule*"))
