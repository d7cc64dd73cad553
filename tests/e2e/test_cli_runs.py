"""The CLI as a user runs it, on a fresh machine with nothing running: the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"


@pytest.fixture
def embedded(tmp_path: Path) -> dict[str, str]:
    """An environment with no broker and no database configured, in an empty directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ORCHESTRATOR_TASK_MODULES"] = "tests"  # the suite's own step modules, as a user lists theirs
    return env


def orchestrator(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_embedded_run_status_runs_history(embedded: dict[str, str], tmp_path: Path) -> None:
    # Given nothing running and no configuration, when a user runs an example
    result = orchestrator(embedded, tmp_path, "run", str(EXAMPLES / "foreach.yaml"), "-i", "order_id=A1", "--json")
    # Then a real worker ran it to the end, state landed in an SQLite file here, and only JSON was printed
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["status"] == "succeeded"
    assert view["outputs"] == {"charged": {"order_id": "A1", "charged": 670, "currency": "EUR"}}
    assert view["steps"]["price"]["output"] == [360, 0, 190, 120]
    assert (tmp_path / "orchestrator.db").exists()

    status = json.loads(orchestrator(embedded, tmp_path, "status", view["run_id"], "--json").stdout)
    assert status["status"] == "succeeded" and status["steps"]["price"]["items"]["total"] == 4
    listed = json.loads(orchestrator(embedded, tmp_path, "runs", "--json").stdout)
    assert [r["run_id"] for r in listed] == [view["run_id"]]
    events = json.loads(orchestrator(embedded, tmp_path, "history", view["run_id"], "--json").stdout)
    assert events[0]["kind"] == "run.started" and events[-1]["kind"] == "run.succeeded"
    assert sum(1 for e in events if e["kind"] == "step.succeeded") == 8

    table = orchestrator(embedded, tmp_path, "status", view["run_id"])
    assert table.returncode == 0 and "charge" in table.stdout and "succeeded" in table.stdout


# These wait for people: tests/e2e/test_cli_waits.py runs approval.yaml with a signal and a sign-off,
# tests/e2e/test_cli_composition.py runs feature-flow.yaml through a rejection and an approval
HUMAN_EXAMPLES = {"approval.yaml", "feature-flow.yaml"}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name not in HUMAN_EXAMPLES))
def test_every_example_runs_embedded(embedded: dict[str, str], tmp_path: Path, example: str) -> None:
    inputs = {
        "linear.yaml": ["x=1", "y=2"],
        "fork-join.yaml": ["base=3"],
        "foreach.yaml": ["order_id=Z9"],
        "if-else.yaml": ["amount=10"],
    }[example]
    args = [arg for pair in inputs for arg in ("-i", pair)]
    result = orchestrator(embedded, tmp_path, "run", str(EXAMPLES / example), *args)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "succeeded" in result.stdout


def test_a_failing_run_exits_1(embedded: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "fails.yaml"
    path.write_text("name: fails\nsteps:\n  boom: {task: 'tests.integration.steps:fail', with: {message: nope}}\n")
    result = orchestrator(embedded, tmp_path, "run", str(path), "--json")
    assert result.returncode == 1
    view = json.loads(result.stdout)
    assert (view["status"], view["error"]) == ("failed", "boom: ValueError: nope")


def test_bad_inputs_unknown_names_and_files_exit_2_and_write_nothing(embedded: dict[str, str], tmp_path: Path) -> None:
    cases = [
        (["run", str(EXAMPLES / "foreach.yaml")], "inputs: 'order_id' is a required property"),
        (["run", str(EXAMPLES / "linear.yaml"), "-i", "x=one", "-i", "y=2"], "inputs.x: 'one' is not of type 'number'"),
        (["run", "no-such-workflow"], "no workflow named 'no-such-workflow' is registered"),
        (["run", "missing.yaml"], "missing.yaml: no such file"),
        (["run", str(EXAMPLES / "linear.yaml"), "-i", "novalue"], "-i takes key=value"),
        (["status", "00000000-0000-0000-0000-000000000000"], "no run 00000000-0000-0000-0000-000000000000"),
        (["run", str(EXAMPLES / "linear.yaml"), "--detach"], "--detach needs workers"),
    ]
    for args, message in cases:
        result = orchestrator(embedded, tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = orchestrator(embedded, tmp_path, "runs", "--json")
    assert json.loads(listed.stdout) == []


def test_unreachable_store_and_broker_exit_3_without_the_password(embedded: dict[str, str], tmp_path: Path) -> None:
    store = {**embedded, "ORCHESTRATOR_DATABASE_URL": "postgresql+psycopg://app:s3cret@127.0.0.1:1/orchestrator"}
    result = orchestrator(store, tmp_path, "run", str(EXAMPLES / "linear.yaml"), "-i", "x=1", "-i", "y=2")
    assert result.returncode == 3
    assert "cannot reach the state store at postgresql+psycopg://app:***@127.0.0.1:1/orchestrator" in result.stderr
    assert "s3cret" not in result.stderr

    broker = {**embedded, "ORCHESTRATOR_BROKER_URL": "redis://:s3cret@127.0.0.1:1/0"}
    result = orchestrator(broker, tmp_path, "run", str(EXAMPLES / "linear.yaml"), "-i", "x=1", "-i", "y=2")
    assert result.returncode == 3
    assert "cannot reach the broker at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr
    listed = orchestrator(embedded, tmp_path, "runs", "--json")
    assert json.loads(listed.stdout) == [], "nothing was half-written"


def test_workflows_register_list_show(embedded: dict[str, str], tmp_path: Path) -> None:
    first = orchestrator(embedded, tmp_path, "workflows", "register", str(EXAMPLES / "linear.yaml"))
    again = orchestrator(embedded, tmp_path, "workflows", "register", str(EXAMPLES / "linear.yaml"))
    assert "registered" in first.stdout and "already registered" in again.stdout
    listed = json.loads(orchestrator(embedded, tmp_path, "workflows", "list", "--json").stdout)
    assert [(w["name"], w["versions"]) for w in listed] == [("linear", 1)]
    shown = json.loads(orchestrator(embedded, tmp_path, "workflows", "show", "linear", "--json").stdout)
    assert list(shown["definition"]["steps"]) == ["add", "scale", "report"]
    by_name = orchestrator(embedded, tmp_path, "run", "linear", "-i", "x=2", "-i", "y=2", "--json")
    assert json.loads(by_name.stdout)["outputs"] == {"result": 8}
