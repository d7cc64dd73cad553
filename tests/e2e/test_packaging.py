"""The project as a user installs it, next to their own project: the wheel ships only the
``orchestrator`` package, so a user's ``tasks`` module (Celery's most common module name) is the one
imported, and ``orchestrator run`` runs the user's workflow and an example from the installed copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of the sources (a stale build/ folder cannot leak into it);
    the repository's own tasks/ folder is copied too, to show it is left out."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("orchestrator", "tasks"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, source, cwd=source)
    assert built.returncode == 0, built.stderr
    [found] = out.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel installed (no dependencies: those of this one are
    reused through a .pth line, which adds its site-packages but not its editable install)."""
    venv = tmp_path_factory.mktemp("venv")
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    fresh = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv).stdout.strip()
    (Path(fresh) / "reuse-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=venv)
    assert done.returncode == 0, done.stderr
    yield venv


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(
        '"""The user\'s own tasks."""\n\n\ndef hello(name):\n    return f"hello {name}"\n'
    )
    (tmp_path / "wf.yaml").write_text("name: mine\nsteps:\n  hi: {task: 'tasks:hello', with: {name: ana}}\n")
    return tmp_path


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_") and k != "PYTHONPATH"}
    return {**env, **extra}


def test_the_wheel_ships_only_the_orchestrator_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"orchestrator"}
    assert {"orchestrator/dlq/__init__.py", "orchestrator/examples.py"} <= set(names)


def test_the_users_tasks_module_is_the_one_imported(installed: Path, user_project: Path) -> None:
    shown = run(
        installed / "bin" / "python",
        "-c",
        "import json, tasks, orchestrator; print(json.dumps([tasks.__file__, orchestrator.__file__]))",
        cwd=user_project,
        env=user_env(),
    )
    assert shown.returncode == 0, shown.stderr
    tasks_file, orchestrator_file = json.loads(shown.stdout)
    assert Path(tasks_file) == user_project / "tasks.py"
    assert Path(orchestrator_file).is_relative_to(installed)
    for gone in ("dlq", "tasks.examples", "tasks.http"):
        missing = run(installed / "bin" / "python", "-c", f"import {gone}", cwd=installed, env=user_env())
        assert "ModuleNotFoundError" in missing.stderr, gone


def test_orchestrator_run_runs_the_users_workflow_and_an_example(installed: Path, user_project: Path) -> None:
    env = user_env(ORCHESTRATOR_TASK_MODULES="tasks")
    mine = run(installed / "bin" / "orchestrator", "run", "wf.yaml", "--json", cwd=user_project, env=env)
    assert mine.returncode == 0, mine.stdout + mine.stderr
    assert json.loads(mine.stdout)["steps"]["hi"]["output"] == "hello ana"
    example = ROOT / "config" / "examples" / "linear.yaml"
    ran = run(
        installed / "bin" / "orchestrator",
        "run",
        example,
        "-i",
        "x=1",
        "-i",
        "y=2",
        "--json",
        cwd=user_project,
        env=env,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
