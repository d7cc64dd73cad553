"""Failure handled, visible and recoverable: retries, timeouts, the dead-letter queue, poison messages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"


def dlq_list(cluster: Cluster, *args: str) -> list[dict[str, object]]:
    result = cluster.cli("dlq", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_non_retryable_error_goes_straight_to_the_dlq(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: charge-once
steps:
  charge:
    task: "{STEPS}:positive"
    with: {{x: -3}}
    retry: {{max_attempts: 5, delay: 10ms, no_retry_on: [ValueError]}}
""",
    )
    cluster.start_worker()
    view = cluster.wait(cluster.start(path))
    assert (view["status"], view["steps"]["charge"]["attempts"]) == ("failed", 1)
    [entry] = dlq_list(cluster)
    assert entry["run_id"] == view["run_id"] and entry["step"] == "charge" and entry["item_index"] is None
    assert entry["inputs"] == {"x": -3}
    assert entry["error"] == "ValueError: x must be positive, got -3"
    assert entry["task"] == f"{STEPS}:positive"
    assert (entry["attempts"], entry["status"], entry["workflow"]) == (1, "open", "charge-once")
    assert view["dead_letters"] == [{"id": entry["id"], "status": "open"}]
    shown = json.loads(cluster.cli("dlq", "show", str(entry["id"]), "--json").stdout)
    assert "raise ValueError" in shown["traceback"] and shown["error_type"] == "ValueError"


def test_a_timed_out_attempt_fails_and_follows_the_retry_policy(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: slow
steps:
  slow:
    task: "{STEPS}:nap"
    with: {{seconds: 30}}
    timeout: 1s
    retry: {{max_attempts: 2, backoff: fixed, delay: 100ms, jitter: false, retry_on: [TimeoutError]}}
""",
    )
    cluster.start_worker()
    view = cluster.wait(cluster.start(path), timeout=60)
    slow = view["steps"]["slow"]
    assert (view["status"], slow["attempts"]) == ("failed", 2)
    assert [a["error"] for a in slow["attempt_log"]] == ["StepTimeout: the attempt ran past its 1s timeout"] * 2
    for attempt in slow["attempt_log"]:
        took = datetime.fromisoformat(attempt["finished_at"]) - datetime.fromisoformat(attempt["started_at"])
        assert 0.9 <= took.total_seconds() < 10
    [entry] = dlq_list(cluster)
    assert entry["error"] == "StepTimeout: the attempt ran past its 1s timeout"


def test_replay_resumes_the_run_to_success(cluster: Cluster, tmp_path: Path) -> None:
    # Given a run whose middle step fails for good, cancelling an independent branch (fail fast)
    flag = tmp_path / "service-is-up"
    path = write(
        tmp_path,
        f"""
name: resumable
steps:
  fetch: {{task: "{STEPS}:echo", with: {{value: 7}}}}
  call-api:
    needs: [fetch]
    task: "{STEPS}:fails_until"
    with: {{flag: "{flag}", value: "${{{{ steps.fetch.output * 6 }}}}"}}
    retry: {{max_attempts: 2, delay: 10ms}}
  report: {{needs: [call-api], task: "{STEPS}:echo", with: {{value: "${{{{ steps['call-api'].output }}}}"}}}}
  later: {{needs: [fetch], task: "{STEPS}:nap", with: {{value: late, seconds: 0.5}}}}
outputs: {{answer: "${{{{ steps.report.output }}}}"}}
""",
    )
    cluster.start_worker(concurrency=1)
    run_id = cluster.start(path)
    failed = cluster.wait(run_id)
    assert failed["status"] == "failed"
    assert failed["steps"]["report"]["status"] == "cancelled"
    [entry] = dlq_list(cluster, "--status", "open")
    # When the service is fixed and the entry replayed
    flag.write_text("up")
    result = cluster.cli("dlq", "replay", str(entry["id"]))
    assert result.returncode == 0, result.stderr
    assert "replayed 1 entry (1 run(s) resumed)" in result.stdout
    # Then the step runs again with its recorded inputs, and the run goes on to succeed
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded", view
    assert view["outputs"] == {"answer": 42}
    assert view["error"] is None
    assert view["steps"]["call-api"]["attempts"] == 3
    assert all(s["status"] == "succeeded" for s in view["steps"].values())
    assert dlq_list(cluster)[0]["status"] == "replayed"
    kinds = [e["kind"] for e in json.loads(cluster.cli("history", run_id, "--json").stdout)]
    assert kinds.count("run.resumed") == 1 and kinds[-1] == "run.succeeded"


def test_replay_with_corrected_inputs(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"name: fixable\nsteps:\n  compute: {{task: '{STEPS}:positive', with: {{x: -1}}}}\n"
        "outputs: {result: '${{ steps.compute.output }}'}\n",
    )
    cluster.start_worker()
    run_id = cluster.start(path)
    assert cluster.wait(run_id)["status"] == "failed"
    [entry] = dlq_list(cluster)
    corrected = tmp_path / "inputs.json"
    corrected.write_text('{"x": 4}')
    result = cluster.cli("dlq", "replay", str(entry["id"]), "--inputs-file", str(corrected))
    assert result.returncode == 0, result.stderr
    assert cluster.wait(run_id)["outputs"] == {"result": 40}


def test_two_replays_of_one_entry_at_once_give_one_attempt(cluster: Cluster, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    path = write(tmp_path, f"name: twice\nsteps:\n  once: {{task: '{STEPS}:flaky', with: {{counter: '{counter}'}}}}\n")
    cluster.start_worker()
    run_id = cluster.start(path)
    assert cluster.wait(run_id)["status"] == "failed"
    [entry] = dlq_list(cluster)
    command = [sys.executable, "-m", "orchestrator", "dlq", "replay", str(entry["id"])]
    racers = [
        subprocess.Popen(command, env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(60), p.stderr.read()) for p in racers)  # type: ignore[union-attr]
    assert [code for code, _ in outcomes] == [0, 2]
    assert "was already replayed" in outcomes[1][1]
    view = cluster.wait(run_id)
    assert view["status"] == "succeeded"
    assert view["steps"]["once"]["attempts"] == 2
    assert counter.read_text() == "2"


def test_bad_replays_are_refused_clearly(cluster: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: refusals
steps:
  slow: {{task: "{STEPS}:nap", with: {{seconds: 20}}}}
  gate: {{task: "{STEPS}:nap", with: {{seconds: 1}}}}
  broken: {{needs: [gate], task: "{STEPS}:fail"}}
""",
    )
    cluster.start_worker(concurrency=2)
    run_id = cluster.start(path)
    deadline = time.monotonic() + 30
    while not dlq_list(cluster):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [entry] = dlq_list(cluster)
    # The run is failing but not over: its slow step is still running
    assert json.loads(cluster.cli("status", run_id, "--json").stdout)["steps"]["slow"]["status"] == "running"
    assert cluster.cli("cancel", run_id).returncode == 0
    refused = cluster.cli("dlq", "replay", str(entry["id"]))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: dead-letter entry {entry['id']} belongs to run {run_id}, "
        "which was cancelled; a cancelled run is not replayed"
    )
    unknown = cluster.cli("dlq", "replay", "no-such-entry")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: no dead-letter entry no-such-entry")
    assert cluster.cli("dlq", "replay").returncode == 2
    assert cluster.cli("dlq", "discard", str(entry["id"])).returncode == 0
    again = cluster.cli("dlq", "discard", str(entry["id"]))
    assert again.returncode == 2 and "was already discarded" in again.stderr
    assert cluster.cli("dlq", "purge", "--older-than", "1d").stdout.strip() == "purged 0 entries"
    assert cluster.cli("dlq", "purge", "--older-than", "0s").stdout.strip() == "purged 1 entry"
    assert dlq_list(cluster) == []
    bad_age = cluster.cli("dlq", "purge", "--older-than", "soon")
    assert bad_age.returncode == 2 and "invalid duration 'soon'" in bad_age.stderr


def test_a_step_that_kills_its_worker_lands_in_the_dlq_while_other_work_goes_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    poison = write(tmp_path, f"name: poison\nsteps:\n  boom: {{task: '{STEPS}:kill_own_worker'}}\n", "poison.yaml")
    cluster.start_worker(concurrency=2)
    poisoned = cluster.start(poison)
    healthy = cluster.start(ROOT / "config/examples/fork-join.yaml", base=2)
    assert cluster.wait(healthy)["status"] == "succeeded"
    view = cluster.wait(poisoned, timeout=90)
    boom = view["steps"]["boom"]
    assert view["status"] == "failed"
    assert boom["error"].startswith("WorkerLost: the worker running this step was lost 3 times (poison limit 3)")
    assert [a["error"].startswith("WorkerLost") for a in boom["attempt_log"]] == [True] * 3
    [entry] = dlq_list(cluster)
    assert entry["step"] == "boom" and str(entry["error"]).startswith("WorkerLost")
    # The worker is still serving
    assert cluster.wait(cluster.start(ROOT / "config/examples/linear.yaml", x=1, y=1))["status"] == "succeeded"


def test_a_retry_delay_longer_than_the_visibility_timeout_runs_once(cluster: Cluster, tmp_path: Path) -> None:
    # Given a broker that redelivers unacknowledged messages after 2 s
    cluster.env["ORCHESTRATOR_VISIBILITY_TIMEOUT_S"] = "2"
    counter = tmp_path / "calls"
    path = write(
        tmp_path,
        f"""
name: patient
steps:
  call:
    task: "{STEPS}:flaky"
    with: {{counter: "{counter}", failures: 1}}
    retry: {{max_attempts: 3, backoff: fixed, delay: 4s, jitter: false}}
""",
    )
    cluster.start_worker(concurrency=2, name="a")
    cluster.start_worker(concurrency=2, name="b")
    # When the step fails once and must wait 4 s before its retry
    view = cluster.wait(cluster.start(path), timeout=60)
    # Then the wait was held in the database, and the retry ran exactly once, on time
    assert view["status"] == "succeeded"
    assert counter.read_text() == "2"
    log = view["steps"]["call"]["attempt_log"]
    assert [a["status"] for a in log] == ["failed", "succeeded"]
    gap = datetime.fromisoformat(log[1]["started_at"]) - datetime.fromisoformat(log[0]["finished_at"])
    assert gap.total_seconds() >= 3.9
    kinds = [e["kind"] for e in json.loads(cluster.cli("history", view["run_id"], "--json").stdout)]
    assert "step.woken" in kinds
    time.sleep(2.5)  # past another visibility timeout: still no second run
    assert counter.read_text() == "2"


def test_replay_all_in_batches_resumes_every_run_of_a_workflow(cluster: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "up"
    path = write(
        tmp_path,
        f"""
name: batchable
inputs: {{type: object, properties: {{n: {{type: integer}}}}}}
steps:
  call: {{task: "{STEPS}:fails_until", with: {{flag: "{flag}", value: "${{{{ inputs.n }}}}"}}}}
  after: {{needs: [call], task: "{STEPS}:echo", with: {{value: "${{{{ steps.call.output }}}}"}}}}
""",
    )
    other = write(tmp_path, f"name: other\nsteps:\n  boom: {{task: '{STEPS}:fail'}}\n", "other.yaml")
    cluster.start_worker(concurrency=2)
    runs = [cluster.start(path, n=i) for i in range(5)]
    other_run = cluster.start(other)
    for run_id in [*runs, other_run]:
        assert cluster.wait(run_id)["status"] == "failed"
    assert len(dlq_list(cluster, "--status", "open")) == 6
    flag.write_text("up")
    result = cluster.cli("dlq", "replay", "--all", "--workflow", "batchable", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (len(report["replayed"]), sorted(report["runs"]), report["refused"]) == (5, sorted(runs), [])
    for i, run_id in enumerate(runs):
        view = cluster.wait(run_id)
        assert (view["status"], view["steps"]["after"]["output"]) == ("succeeded", i)
    # The other workflow's entry is untouched
    assert [e["workflow"] for e in dlq_list(cluster, "--status", "open")] == ["other"]
    assert cluster.wait(other_run)["status"] == "failed"
