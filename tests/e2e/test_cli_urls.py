"""Malformed database and broker URLs through the CLI: the error is one line with the documented
exit code, and the password appears nowhere in what the command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Sup3rS3cretPassw0rd"
HALF = "S3cretPassw0rd"  # what is left of the password after an unencoded '@' in it
WORKFLOW = "name: one\nsteps:\n  a: {task: tests.integration.steps:echo}\n"


def _orchestrator(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    clean.update(PYTHONPATH=str(ROOT), ORCHESTRATOR_TASK_MODULES="tests.integration.steps", **env)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_hidden(result: subprocess.CompletedProcess[str], code: int) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert PASSWORD not in output and HALF not in output and "Sup3r" not in output, output
    assert "Traceback" not in output, output
    assert len(result.stderr.strip().splitlines()) == 1, output


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"user:{PASSWORD}@127.0.0.1/db", 2),  # no scheme: it used to be echoed whole
        (f"postgresql://user:Sup3r@{HALF}@127.0.0.1:1/db", 2),  # '@' in the password
        (f"postgresql+psycopg://user:{PASSWORD}@127.0.0.1:notaport/db", 2),
        (f"postgresql+psycopg://user:Sup3r:{HALF}@127.0.0.1:1/db", 3),  # ':' in the password
        (f"postgresql+psycopg://user:Sup3r%40{HALF}@127.0.0.1:1/db", 3),  # percent-encoded '@'
        (f"postgresql+psycopg://user@127.0.0.1:1/db?password={PASSWORD}", 3),  # in the query
        (f"postgresql+psycopg://user:{PASSWORD}@no-such-host.invalid/db", 3),
        (f"postgresql://user:{PASSWORD}@/db", 3),  # no host: psycopg tries the local socket
    ],
)
def test_a_database_url_never_shows_its_password(tmp_path: Path, url: str, code: int) -> None:
    _assert_hidden(_orchestrator(tmp_path, "runs", ORCHESTRATOR_DATABASE_URL=url), code)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"x:{PASSWORD}@127.0.0.1", 2),  # kombu would read it as an AMQP host name
        (f"redis://:Sup3r@{HALF}@127.0.0.1:1/0", 2),
        (f"redis://:{PASSWORD}@127.0.0.1:notaport/0", 2),
        (f"redis://:{PASSWORD}@127.0.0.1:1/0", 3),
        (f"redis://user:Sup3r:{HALF}@127.0.0.1:1/0", 3),
    ],
)
def test_a_broker_url_never_shows_its_password(tmp_path: Path, url: str, code: int) -> None:
    (tmp_path / "one.yaml").write_text(WORKFLOW)
    result = _orchestrator(
        tmp_path, "run", "one.yaml", "--detach", ORCHESTRATOR_BROKER_URL=url, ORCHESTRATOR_DATABASE_URL="sqlite:///s.db"
    )
    _assert_hidden(result, code)


def test_the_redacted_url_still_names_the_host(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/orders"
    result = _orchestrator(tmp_path, "runs", ORCHESTRATOR_DATABASE_URL=url)
    assert "postgresql+psycopg://alice:***@127.0.0.1:1/orders" in result.stderr
