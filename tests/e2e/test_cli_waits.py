"""Waits, approvals and repairs through the CLI on the embedded default: no server, an SQLite file,
one terminal running a workflow while another signals, approves or repairs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import embedded, orchestrator

pytestmark = pytest.mark.e2e
__all__ = ["embedded"]


def background(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "orchestrator", *args]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def waiting(env: dict[str, str], cwd: Path, step: str) -> str:
    """The id of the run whose ``step`` is waiting, once it is."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = orchestrator(env, cwd, "runs", "--json")
        for run in json.loads(listed.stdout or "[]"):
            view = json.loads(orchestrator(env, cwd, "status", run["run_id"], "--json").stdout)
            if view["steps"].get(step, {}).get("status") == "waiting":
                return str(run["run_id"])
        time.sleep(0.3)
    raise AssertionError(f"no run's {step} started waiting")


def test_a_signal_from_another_terminal_completes_an_embedded_run(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "wait.yaml").write_text(
        "name: waiter\n"
        "steps:\n"
        '  pay: {wait: {event: paid, key: "${{ inputs.order }}"}}\n'
        "  ship: {needs: pay, task: orchestrator.examples:notify,"
        " with: {message: 'paid ${{ steps.pay.output.amount }}'}}\n"
        "outputs: {shipped: '${{ steps.ship.output }}'}\n"
    )
    run = background(embedded, tmp_path, "run", "wait.yaml", "-i", "order=A1", "--json")
    run_id = waiting(embedded, tmp_path, "pay")
    # The id is printed whole in an 80-column terminal, so it can be copied
    narrow = orchestrator({**embedded, "COLUMNS": "80"}, tmp_path, "runs")
    assert run_id in narrow.stdout
    said = orchestrator(embedded, tmp_path, "signal", "paid", "--key", "A1", "--data", '{"amount": 5}')
    assert said.returncode == 0, said.stderr
    assert "1 step(s) completed" in said.stdout
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["outputs"] == {"shipped": "sent: paid 5"}


def test_approve_and_retry_on_the_embedded_default(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sign.yaml").write_text(
        "name: sign\nsteps:\n  ok: {approval: {approvers: [ann]}}\n"
        "  after: {needs: ok, task: orchestrator.examples:notify, with: {message: 'by ${{ steps.ok.output.by[0] }}'}}\n"
    )
    run = background(embedded, tmp_path, "run", "sign.yaml", "--json")
    run_id = waiting(embedded, tmp_path, "ok")
    listed = orchestrator(embedded, tmp_path, "approvals", "--json")
    assert [(a["run_id"], a["approvers"]) for a in json.loads(listed.stdout)] == [(run_id, ["ann"])]
    wrong = orchestrator(embedded, tmp_path, "approve", run_id, "ok", "--by", "bob")
    assert wrong.returncode == 2 and "bob may not decide" in wrong.stderr
    right = orchestrator({**embedded, "ORCHESTRATOR_ACTOR": "ann"}, tmp_path, "approve", run_id, "ok")
    assert right.returncode == 0, right.stderr
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["steps"]["after"]["output"] == "sent: by ann"

    # A run that failed is retried from its failed step once the cause is fixed
    flag = tmp_path / "flag"
    (tmp_path / "fix.yaml").write_text(
        "name: fix\nsteps:\n"
        f"  a: {{task: tests.integration.steps:fails_until, with: {{flag: '{flag}'}}}}\n"
        "  b: {needs: a, task: orchestrator.examples:notify, with: {message: done}}\n"
    )
    failed = orchestrator(embedded, tmp_path, "run", "fix.yaml", "--json")
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    flag.touch()
    retried = orchestrator(embedded, tmp_path, "retry", run_id, "--reason", "flag is back")
    assert retried.returncode == 0, retried.stderr
    view = json.loads(orchestrator(embedded, tmp_path, "status", run_id, "--json").stdout)
    assert (view["status"], view["steps"]["b"]["output"]) == ("succeeded", "sent: done")
    events = json.loads(orchestrator(embedded, tmp_path, "history", run_id, "--json").stdout)
    retry = next(e for e in events if e["kind"] == "run.retried")
    assert retry["detail"]["reason"] == "flag is back" and retry["detail"]["steps"] == ["a", "b"]


def test_the_approval_example_with_a_signal_and_a_sign_off(embedded: dict[str, str], tmp_path: Path) -> None:
    example = str(Path(__file__).resolve().parents[2] / "config" / "examples" / "approval.yaml")
    run = background(embedded, tmp_path, "run", example, "-i", "order_id=A1", "--json")
    run_id = waiting(embedded, tmp_path, "payment")
    said = orchestrator(embedded, tmp_path, "signal", "payment.confirmed", "--key", "A1", "--data", '{"amount": 42}')
    assert said.returncode == 0, said.stderr
    waiting(embedded, tmp_path, "sign-off")  # after the 2-second cooling-off timer
    wrong = orchestrator(embedded, tmp_path, "approve", run_id, "sign-off", "--keyword", "ship it")
    assert wrong.returncode == 2 and "keyword" in wrong.stderr
    right = orchestrator(embedded, tmp_path, "approve", run_id, "sign-off", "--keyword", "SHIP IT", "--by", "ann")
    assert right.returncode == 0, right.stderr
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["outputs"] == {"shipped": "sent: order A1 paid 42, approved by ann"}
