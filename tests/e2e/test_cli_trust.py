"""Runs that must end, through the CLI as a user runs it (the embedded default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STEPS = "tests.integration.trust_steps"


def test_a_failure_while_a_long_branch_runs_still_ends_the_run(tmp_path: Path) -> None:
    # Given the smallest failing workflow from the issue: a slow branch, its dependent, a broken step
    # (behind a short gate, so the slow branch is surely running when it fails)
    path = tmp_path / "hang.yaml"
    path.write_text(
        f"""
name: hang
defaults: {{retry: {{max_attempts: 1}}}}
steps:
  slow: {{task: "{STEPS}:sleep_then", with: {{value: slow, seconds: 2}}}}
  after-slow: {{needs: [slow], task: "tests.integration.steps:echo"}}
  gate: {{task: "{STEPS}:sleep_then", with: {{seconds: 0.5}}}}
  broken: {{needs: [gate], task: "tests.integration.steps:fail"}}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ORCHESTRATOR_TASK_MODULES"] = "tests"
    # When it runs (on today's code it never returned)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it ends failed, the running branch having finished and nothing new started
    assert result.returncode == 1, result.stderr
    view = json.loads(result.stdout)
    statuses = {name: step["status"] for name, step in view["steps"].items()}
    assert view["status"] == "failed"
    assert statuses == {"slow": "succeeded", "after-slow": "cancelled", "gate": "succeeded", "broken": "failed"}
