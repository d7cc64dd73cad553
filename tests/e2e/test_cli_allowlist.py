"""The task module allowlist as a user meets it: ``validate``, ``run`` and ``run --dry-run`` refuse a
step outside ORCHESTRATOR_TASK_MODULES in one line, exit 2, and nothing of it is imported or run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REFUSED = (
    "step 'a': task 'loud_steps:f' is refused: module 'loud_steps' is not in ORCHESTRATOR_TASK_MODULES "
    "(unset; built-in: orchestrator.steps.http:request, orchestrator.examples)"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder: a module that leaves a file behind when imported, and a workflow calling it."""
    (tmp_path / "loud_steps.py").write_text(
        "from pathlib import Path\nPath('imported').write_text('yes')\n\ndef f():\n    return 'ran'\n"
    )
    (tmp_path / "wf.yaml").write_text("name: loud\nsteps:\n  a: {task: 'loud_steps:f'}\n")
    return tmp_path


def orchestrator(cwd: Path, *args: str, modules: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATOR_TASK_MODULES": modules, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    env.pop("ORCHESTRATOR_DATABASE_URL", None)
    env.pop("ORCHESTRATOR_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", [["validate"], ["run"], ["run", "--dry-run"]], ids=["validate", "run", "dry-run"])
def test_a_module_outside_the_list_is_refused_in_one_line_and_never_imported(project: Path, command: list[str]) -> None:
    result = orchestrator(project, *command, "wf.yaml")
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.removeprefix("error: ") == f"wf.yaml:3: {REFUSED}"
    assert not (project / "imported").exists()


def test_validate_import_any_checks_it_and_warns(project: Path) -> None:
    result = orchestrator(project, "validate", "--import-any", "wf.yaml")
    assert result.returncode == 0, result.stderr
    assert f"wf.yaml:3: warning: {REFUSED} (checked anyway: --import-any; the workers will refuse it)" in result.stderr
    assert (project / "imported").exists()


def test_listed_it_runs(project: Path) -> None:
    result = orchestrator(project, "run", "wf.yaml", "--json", modules="loud_steps")
    assert result.returncode == 0, result.stderr
    assert '"output": "ran"' in result.stdout


def test_the_examples_run_with_the_variable_unset(tmp_path: Path) -> None:
    result = orchestrator(tmp_path, "run", str(ROOT / "config/examples/linear.yaml"), "-i", "x=1", "-i", "y=2")
    assert result.returncode == 0, result.stdout + result.stderr
