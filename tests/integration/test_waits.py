"""Waits, approvals, pause/resume and repairs on real workers, PostgreSQL and Redis, through the
CLI as a user types it (and the signal also through the Celery task and the Python client)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.views import run_view
from tests.conftest import ROOT, Cluster
from tests.conftest import write_workflow as write
from tests.integration.wait_steps import lines

pytestmark = pytest.mark.integration
W = "tests.integration.wait_steps"
STEPS = "tests.integration.steps"


def status(cluster: Cluster, run_id: str) -> dict[str, Any]:
    result = cluster.cli("status", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def until(cluster: Cluster, run_id: str, step: str, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = status(cluster, run_id)
        if view["steps"][step]["status"] == state:
            return view
        assert time.monotonic() < deadline, f"{step} still {view['steps'][step]['status']}: {view}"
        time.sleep(0.2)


def history(cluster: Cluster, run_id: str) -> list[str]:
    result = cluster.cli("history", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return [e["kind"] for e in json.loads(result.stdout)]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert text in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback


PAYMENT = f"""
name: payment
steps:
  pay:
    wait: {{event: paid, key: "${{{{ inputs.order }}}}"}}
  ship:
    needs: pay
    task: "{STEPS}:echo"
    with: {{value: "${{{{ steps.pay.output }}}}"}}
outputs: {{shipped: "${{{{ steps.ship.output }}}}"}}
"""


def test_signals_before_and_after_the_wait_by_cli_celery_and_client(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, PAYMENT)
    cluster.start_worker()
    ok(cluster.cli("workflows", "register", str(path)))

    # After the wait: the step is waiting, holding no worker; the signal completes it with its data
    after = cluster.start("payment", order="A")
    view = until(cluster, after, "pay", "waiting")
    assert view["steps"]["pay"]["waiting_for"] == {"event": "paid", "key": "A", "deadline": None}
    assert "1 step(s) completed" in ok(cluster.cli("signal", "paid", "--key", "A", "--data", '{"n": 1}'))
    assert cluster.wait(after)["outputs"] == {"shipped": {"n": 1}}

    # Before the wait: kept, and delivered when the step starts waiting
    assert "kept" in ok(cluster.cli("signal", "paid", "--key", "B", "--data", '{"n": 2}'))
    assert cluster.wait(cluster.start("payment", order="B"))["outputs"] == {"shipped": {"n": 2}}

    # Through the Celery task, as another service sends it
    by_celery = cluster.start("payment", order="C")
    until(cluster, by_celery, "pay", "waiting")
    sent = cluster.python(
        "from orchestrator.worker.app import app\n"
        "app.send_task('orchestrator.signal', kwargs={'event': 'paid', 'key': 'C', 'data': {'n': 3}})"
    )
    assert sent.returncode == 0, sent.stderr
    assert cluster.wait(by_celery)["outputs"] == {"shipped": {"n": 3}}

    # Through the Python client
    by_client = cluster.start("payment", order="D")
    until(cluster, by_client, "pay", "waiting")
    said = cluster.python("from orchestrator.client import signal\nprint(signal('paid', 'D', {'n': 4}))")
    assert said.stdout.strip() == "1", said.stderr
    assert cluster.wait(by_client)["outputs"] == {"shipped": {"n": 4}}


def test_the_same_signal_sent_twice_at_once_completes_the_step_once(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, PAYMENT)
    cluster.start_worker()
    run_id = cluster.start(path, order="E")
    until(cluster, run_id, "pay", "waiting")
    command = [sys.executable, "-m", "orchestrator", "signal", "paid", "--key", "E", "--json"]
    senders = [
        subprocess.Popen(command + ["--data", str(n)], env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for n in (1, 2)
    ]
    answers = [json.loads(p.communicate(timeout=60)[0]) for p in senders]
    view = cluster.wait(run_id)
    # Exactly one completed the step; the other found nothing waiting and was kept for a later wait
    assert sorted(len(a["delivered"]) for a in answers) == [0, 1]
    assert sorted(a["kept"] for a in answers) == [False, True]
    winner = next(a for a in answers if a["delivered"])
    assert view["status"] == "succeeded"
    assert view["steps"]["pay"]["attempts"] == 1
    assert view["outputs"]["shipped"] == (1 if winner is answers[0] else 2)
    assert history(cluster, run_id).count("step.signalled") == 1


def test_a_wait_times_out_and_a_timer_fires_once_after_every_worker_was_down(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    timeout = write(
        tmp_path,
        "name: late\nsteps:\n  pay: {wait: {event: never, key: k, timeout: 1s}}\n",
        "late.yaml",
    )
    timer = write(
        tmp_path,
        f"""
name: timer
steps:
  cool: {{wait: {{for: 3s}}}}
  after: {{needs: cool, task: "{W}:mark", with: {{path: "{ledger}", name: after}}}}
""",
        "timer.yaml",
    )
    worker = cluster.start_worker()
    late = cluster.wait(cluster.start(timeout), timeout=30)
    assert late["status"] == "failed"
    assert late["error"].startswith("pay: WaitTimeout: no never signal for key 'k' within 1s")
    entries = json.loads(ok(cluster.cli("dlq", "list", "--json")))
    assert [(e["step"], e["task"]) for e in entries] == [("pay", "wait:never")]

    # Given a 3-second timer, and every worker gone before it is due
    run_id = cluster.start(timer)
    deadline = time.monotonic() + 30
    while run_view(cluster.repo, run_id)["steps"]["cool"]["status"] != "waiting":  # in-process: no CLI start-up
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cluster.kill(worker)
    time.sleep(4.5)
    # Then nothing fired it while nobody was there
    assert status(cluster, run_id)["steps"]["cool"]["status"] == "waiting"
    assert lines(ledger) == []
    # And when a worker comes back, it fires once and the run goes on
    cluster.start_worker(name="back")
    assert cluster.wait(run_id, timeout=30)["status"] == "succeeded"
    assert history(cluster, run_id).count("step.fired") == 1
    assert lines(ledger) == ["start after", "end after"]


def test_approvals_quorum_refusals_rejection_and_timeout(cluster: Cluster, tmp_path: Path) -> None:
    ship = write(
        tmp_path,
        f"""
name: ship
steps:
  sign:
    approval:
      approvers: [alice, bob]
      required: 2
      keyword: SHIP IT
      inputs: {{type: object, properties: {{note: {{type: string}}}}, additionalProperties: false}}
    retry: {{max_attempts: 3, delay: 1s}}
  go: {{needs: sign, task: "{STEPS}:echo", with: {{value: "${{{{ steps.sign.output.by }}}}"}}}}
""",
        "ship.yaml",
    )
    lenient = write(
        tmp_path,
        "name: lenient\nsteps:\n  sign: {approval: {timeout: 1s, on_timeout: approve}}\n",
        "lenient.yaml",
    )
    cluster.start_worker()
    run_id = cluster.start(ship)
    until(cluster, run_id, "sign", "waiting")
    refused(cluster.cli("approve", run_id, "sign", "--by", "eve", "--keyword", "SHIP IT"), "eve may not decide")
    refused(cluster.cli("approve", run_id, "sign", "--by", "alice", "--keyword", "ship it"), "keyword")
    refused(
        cluster.cli("approve", run_id, "sign", "--by", "alice", "--keyword", "SHIP IT", "--data", '{"x": 1}'),
        "approval inputs",
    )
    refused(cluster.cli("approve", run_id, "sign", "--by", "alice", "--data", "{not json"), "--data is not JSON")
    refused(cluster.cli("approve", run_id, "go", "--by", "alice"), "not an approval")
    refused(cluster.cli("approve", "no-such-run", "sign", "--by", "alice"), "no run no-such-run")
    said = ok(cluster.cli("approve", run_id, "sign", "--by", "alice", "--keyword", "SHIP IT", "--comment", "fine"))
    assert "(1/2)" in said
    refused(cluster.cli("approve", run_id, "sign", "--by", "alice", "--keyword", "SHIP IT"), "counts once")
    waiting = json.loads(ok(cluster.cli("approvals", "--json")))
    assert [(a["run_id"], a["step"], a["approved_by"], a["required"]) for a in waiting] == [
        (run_id, "sign", ["alice"], 2)
    ]
    ok(cluster.cli("approve", run_id, "sign", "--by", "bob", "--keyword", "SHIP IT", "--data", '{"note": "go"}'))
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded"
    assert view["steps"]["go"]["output"] == ["alice", "bob"]
    assert view["steps"]["sign"]["output"]["data"] == {"note": "go"}
    assert json.loads(ok(cluster.cli("approvals", "--json"))) == []

    # A rejection fails the step with ApprovalRejected, never retried (though its retry policy allows 3)
    rejected = cluster.start(ship)
    until(cluster, rejected, "sign", "waiting")
    ok(cluster.cli("reject", rejected, "sign", "--by", "bob", "--comment", "not today"))
    view = cluster.wait(rejected)
    assert view["status"] == "failed" and view["steps"]["sign"]["attempts"] == 1
    assert view["error"] == "sign: ApprovalRejected: rejected by bob: not today"
    refused(cluster.cli("approve", rejected, "sign", "--by", "alice", "--keyword", "SHIP IT"), "not waiting")

    # on_timeout: approve
    view = cluster.wait(cluster.start(lenient), timeout=30)
    assert view["status"] == "succeeded"
    assert view["steps"]["sign"]["output"]["timed_out"] is True

    # Every decision is in the history with who and when
    decided = [e for e in json.loads(ok(cluster.cli("history", run_id, "--json"))) if e["kind"] == "step.decided"]
    assert [(e["detail"]["by"], e["detail"]["comment"]) for e in decided] == [("alice", "fine"), ("bob", None)]


def test_pause_holds_every_new_step_until_resume(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    path = write(
        tmp_path,
        f"""
name: pausable
steps:
  first: {{task: "{W}:mark", with: {{path: "{ledger}", name: first, seconds: 4}}}}
  second: {{task: "{W}:mark", with: {{path: "{ledger}", name: second}}}}
  fan:
    needs: [first, second]
    foreach: [1, 2, 3]
    concurrency: 1
    task: "{W}:mark"
    with: {{path: "{ledger}", name: "item${{{{ item }}}}"}}
""",
    )
    # One worker slot: "second"'s message waits in Redis while "first" runs
    cluster.start_worker(concurrency=1)
    run_id = cluster.start(path)
    deadline = time.monotonic() + 30
    while lines(ledger) != ["start first"]:
        assert time.monotonic() < deadline, lines(ledger)
        time.sleep(0.05)
    assert "paused" in ok(cluster.cli("pause", run_id, "--by", "ops", "--reason", "maintenance"))
    # The running step finishes and is recorded; the message already sent is held back; nothing else starts
    until(cluster, run_id, "first", "succeeded")
    deadline = time.monotonic() + 30
    while "step.held" not in history(cluster, run_id):  # the worker took second's message and held it back
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status(cluster, run_id)["steps"]["second"]["status"] == "queued"  # with its inputs, no message
    time.sleep(2)
    assert lines(ledger) == ["start first", "end first"]
    assert status(cluster, run_id)["status"] == "paused"
    ok(cluster.cli("resume", run_id, "--by", "ops"))
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded"
    assert lines(ledger)[2:] == ["start second", "end second"] + [
        f"{e} item{i}" for i in (1, 2, 3) for e in ("start", "end")
    ]
    events = json.loads(ok(cluster.cli("history", run_id, "--json")))
    paused = next(e for e in events if e["kind"] == "run.paused")
    assert paused["detail"] == {"by": "ops", "reason": "maintenance"}
    assert "step.held" in [e["kind"] for e in events]


def test_retry_from_the_failed_step_retry_from_skip_and_accept(cluster: Cluster, tmp_path: Path) -> None:
    ledger, flag = tmp_path / "ledger", tmp_path / "fixed"
    path = write(
        tmp_path,
        f"""
name: repairable
steps:
  a: {{task: "{W}:mark", with: {{path: "{ledger}", name: a}}}}
  b: {{needs: a, task: "{W}:broken_until", with: {{flag: "{flag}", path: "{ledger}", name: b}}}}
  c: {{needs: b, task: "{W}:mark", with: {{path: "{ledger}", name: c, value: "${{{{ steps.b.output }}}}"}}}}
""",
    )
    cluster.start_worker()
    run_id = cluster.start(path)
    assert cluster.wait(run_id)["status"] == "failed"
    flag.touch()
    ok(cluster.cli("retry", run_id, "--by", "ops", "--reason", "flag fixed"))
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded" and view["steps"]["c"]["output"] == "b"
    # a succeeded the first time and kept its output: it did not run again
    assert lines(ledger) == ["start a", "end a", "start b", "start b", "start c", "end c"]
    assert [e["status"] for e in json.loads(ok(cluster.cli("dlq", "list", "--json")))] == ["resolved"]

    # --from a: a and everything after it, though all succeeded
    ok(cluster.cli("retry", run_id, "--from", "a"))
    assert cluster.wait(run_id)["status"] == "succeeded"
    assert lines(ledger)[6:] == ["start a", "end a", "start b", "start c", "end c"]

    # skip and accept a failed step: the run goes on
    flag.unlink()
    skipped, accepted = cluster.start(path), cluster.start(path)
    assert cluster.wait(skipped)["status"] == cluster.wait(accepted)["status"] == "failed"
    ok(cluster.cli("skip", skipped, "b", "--by", "ops"))
    ok(cluster.cli("accept", accepted, "b", "--output", '"by hand"', "--by", "ops"))
    view = cluster.wait(skipped)
    assert (view["status"], view["steps"]["b"]["status"], view["steps"]["c"]["status"]) == (
        "succeeded",
        "skipped",
        "skipped",
    )
    view = cluster.wait(accepted)
    assert (view["status"], view["steps"]["c"]["output"]) == ("succeeded", "by hand")


def test_bad_input_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, PAYMENT)
    cluster.start_worker()
    run_id = cluster.start(path, order="Z")
    until(cluster, run_id, "pay", "waiting")
    before = status(cluster, run_id)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * (5 * 1024 * 1024)}))
    refused(
        cluster.cli("signal", "paid", "--key", "Z", "--data", f"@{big}"),
        "is larger than 1048576 bytes (ORCHESTRATOR_MAX_PAYLOAD); nothing was stored",
    )
    refused(cluster.cli("signal", "piad", "--key", "Z"), "no workflow waits on event 'piad'")
    refused(cluster.cli("signal", "paid", "--key", "Z", "--data", "{oops"), "--data is not JSON")
    refused(cluster.cli("signal", "paid", "--key", "Z", "--run", "nope"), "no run nope")
    refused(cluster.cli("pause", "nope"), "no run nope")
    refused(cluster.cli("resume", run_id), "not paused")
    refused(cluster.cli("retry", run_id), "retry applies to a run that ended")
    refused(cluster.cli("skip", run_id, "nope"), "has no step 'nope'")
    refused(cluster.cli("skip", run_id, "ship"), "only a failed or waiting step")
    refused(cluster.cli("accept", run_id, "pay", "--output", "not json"), "--output is not JSON")
    refused(cluster.cli("approve", run_id, "pay", "--by", "x"), "not an approval")
    assert status(cluster, run_id) == before
    # and the step still takes the real signal
    ok(cluster.cli("signal", "paid", "--key", "Z", "--data", "1"))
    assert cluster.wait(run_id)["outputs"] == {"shipped": 1}
