"""The first registration of a workflow on PostgreSQL says so (psycopg's rowcount is -1 for an
``INSERT ... ON CONFLICT DO NOTHING``, which once made every registration "already registered")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_first_register_on_postgresql_says_registered(database_url: str) -> None:
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    env.pop("ORCHESTRATOR_BROKER_URL", None)
    linear = str(ROOT / "config/examples/linear.yaml")

    def register() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "workflows", "register", linear],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first, second = register(), register()
    assert first.startswith("linear version ") and first.endswith(" registered and activated"), first
    assert second.endswith(" already registered, and active"), second
