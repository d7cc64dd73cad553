"""``orchestrator serve`` and ``orchestrator flower`` refuse to listen beyond loopback without credentials."""

from __future__ import annotations

import os
import subprocess
import sys
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
