"""Regression tests for the core's failure handling, on real workers, PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"
TRUST = "tests.integration.trust_steps"


@pytest.fixture
def trusted(cluster: Cluster) -> Cluster:
    cluster.env["ORCHESTRATOR_TASK_MODULES"] = f"{STEPS},{TRUST}"
    return cluster


def dlq(cluster: Cluster, *args: str) -> list[dict[str, object]]:
    result = cluster.cli("dlq", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_foreach_cancelled_by_fail_fast_ends_and_its_all_done_join_runs(trusted: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: fan-fails
steps:
  fan:
    foreach: [1, 2, 3, 4, 5, 6]
    concurrency: 1
    task: "{TRUST}:sleep_then"
    with: {{value: "${{{{ item }}}}", seconds: 0.1}}
  broken: {{task: "{STEPS}:fail"}}
  cleanup: {{needs: [fan], trigger: all_done, task: "{STEPS}:echo", with: {{value: cleaned}}}}
""",
    )
    # One worker slot: when the failure lands, the foreach's next item is queued or pending, never running.
    # Every step a message: run in-process, the items would all run before `broken`'s message is taken
    trusted.start_worker(concurrency=1, env={"ORCHESTRATOR_LOCAL_STEPS": "0"})
    view = trusted.wait(trusted.start(path), timeout=40)
    steps = view["steps"]
    assert view["status"] == "failed"
    assert steps["fan"]["status"] == "cancelled"
    assert steps["fan"]["items"].get("cancelled", 0) >= 1
    assert (steps["cleanup"]["status"], steps["cleanup"]["output"]) == ("succeeded", "cleaned")


def test_replay_reopens_a_foreach_that_fail_fast_cancelled(trusted: Cluster, tmp_path: Path) -> None:
    # Given a run whose slow foreach was cancelled because another step failed for good
    flag = tmp_path / "up"
    path = write(
        tmp_path,
        f"""
name: fan-replay
steps:
  fan:
    foreach: [1, 2, 3, 4]
    concurrency: 1
    task: "{TRUST}:sleep_then"
    with: {{value: "${{{{ item }}}}", seconds: 0.3}}
  call: {{task: "{TRUST}:needs_flag", with: {{flag: "{flag}"}}}}
  total: {{needs: [fan, call], task: "{STEPS}:total", with: {{values: "${{{{ steps.fan.output }}}}"}}}}
""",
    )
    trusted.start_worker(concurrency=2)
    run_id = trusted.start(path)
    assert trusted.wait(run_id, timeout=40)["status"] == "failed"
    [entry] = dlq(trusted)
    # When the service is back and the entry is replayed
    flag.write_text("up")
    assert trusted.cli("dlq", "replay", str(entry["id"])).returncode == 0
    # Then the foreach runs its items again and the run succeeds end to end
    view = trusted.wait(run_id, timeout=40)
    assert view["status"] == "succeeded", view["steps"]
    assert view["steps"]["fan"]["output"] == [1, 2, 3, 4]
    assert view["steps"]["total"]["output"] == 10


def test_replaying_a_good_and_a_bad_entry_replays_nothing(trusted: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, f"name: lone\nsteps:\n  boom: {{task: '{STEPS}:fail'}}\n")
    trusted.start_worker()
    run_id = trusted.start(path)
    assert trusted.wait(run_id)["status"] == "failed"
    [good] = dlq(trusted)
    result = trusted.cli("dlq", "replay", str(good["id"]), "no-such-entry")
    assert result.returncode == 2
    assert "no-such-entry" in result.stderr
    assert [e["status"] for e in dlq(trusted)] == ["open"]
    assert trusted.wait(run_id)["status"] == "failed"


def test_an_expression_error_gets_a_dead_letter_entry_and_can_be_replayed(trusted: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: divide
inputs: {{type: object, properties: {{a: {{type: number}}, b: {{type: number}}}}}}
steps:
  ratio: {{task: "{STEPS}:echo", with: {{value: "${{{{ inputs.a / inputs.b }}}}"}}}}
outputs: {{ratio: "${{{{ steps.ratio.output }}}}"}}
""",
    )
    trusted.start_worker()
    run_id = trusted.start(path, a=1, b=0)
    assert trusted.wait(run_id)["status"] == "failed"
    [entry] = dlq(trusted)
    assert entry["step"] == "ratio" and entry["inputs"] is None
    assert "EvaluationError" in str(entry["error"])
    corrected = tmp_path / "inputs.json"
    corrected.write_text('{"value": 0.5}')
    assert trusted.cli("dlq", "replay", str(entry["id"]), "--inputs-file", str(corrected)).returncode == 0
    view = trusted.wait(run_id)
    assert (view["status"], view["outputs"]) == ("succeeded", {"ratio": 0.5})


def test_data_the_store_refuses_fails_the_step_instead_of_stranding_it(trusted: Cluster, tmp_path: Path) -> None:
    # An output with a NUL character (PostgreSQL's jsonb refuses it), and an input rendered to infinity
    text = write(tmp_path, f"name: nul\nsteps:\n  text: {{task: '{TRUST}:nul_text'}}\n", "nul.yaml")
    overflow = write(
        tmp_path,
        f"""
name: overflow
steps:
  ten: {{task: "{STEPS}:echo", with: {{value: 10}}}}
  huge: {{needs: [ten], task: "{STEPS}:echo", with: {{value: "${{{{ steps.ten.output * 1e308 }}}}"}}}}
""",
        "overflow.yaml",
    )
    trusted.start_worker()
    first = trusted.wait(trusted.start(text), timeout=40)
    assert (first["status"], first["steps"]["text"]["status"]) == ("failed", "failed")
    assert "NUL" in first["steps"]["text"]["error"]
    second = trusted.wait(trusted.start(overflow), timeout=40)
    assert (second["status"], second["steps"]["huge"]["status"]) == ("failed", "failed")
    assert "EvaluationError" in second["steps"]["huge"]["error"]
    assert {e["step"] for e in dlq(trusted)} == {"text", "huge"}


def test_a_step_argument_named_name_or_func_behind_a_breaker(trusted: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: named
breakers: {{api: {{fail_max: 2}}}}
steps:
  call: {{task: "{TRUST}:named", with: {{name: Ada, func: f}}, breaker: api}}
""",
    )
    trusted.start_worker()
    view = trusted.wait(trusted.start(path))
    assert (view["status"], view["steps"]["call"]["output"]) == ("succeeded", {"name": "Ada", "func": "f"})


def test_a_redelivered_submit_message_starts_one_run(trusted: Cluster) -> None:
    from tests.conftest import ROOT

    assert trusted.cli("workflows", "register", str(ROOT / "config/examples/linear.yaml")).returncode == 0
    trusted.start_worker()
    code = """
from orchestrator.worker.app import app
for _ in range(2):
    app.send_task("orchestrator.submit", kwargs={"workflow": "linear", "inputs": {"x": 1, "y": 1}},
                  task_id="11111111-2222-3333-4444-555555555555")
"""
    assert trusted.python(code).returncode == 0
    deadline = time.monotonic() + 30
    while True:
        runs = json.loads(trusted.cli("runs", "--json").stdout)
        if runs and all(r["status"] == "succeeded" for r in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    time.sleep(1)
    assert len(json.loads(trusted.cli("runs", "--json").stdout)) == 1


def test_the_reconciler_does_not_send_a_backlog_twice(trusted: Cluster, tmp_path: Path) -> None:
    # Given five runs queued while no worker runs, waiting past the stale limit (3 s here)
    path = write(tmp_path, f"name: backlog\nsteps:\n  only: {{task: '{STEPS}:echo', with: {{value: 1}}}}\n")
    runs = [trusted.start(path) for _ in range(5)]
    time.sleep(3.5)
    # When reconcilers run twice
    code = "from orchestrator.worker.tasks import reconcile\nreconcile()\nreconcile()\n"
    assert trusted.python(code).returncode == 0
    # Then the queue still holds one message per step, and each step runs once
    assert redis.Redis.from_url(trusted.broker_url).llen("orchestrator") == 5
    trusted.start_worker()
    for run_id in runs:
        view = trusted.wait(run_id)
        assert (view["status"], view["steps"]["only"]["attempts"]) == ("succeeded", 1)


def test_cancel_a_run_with_more_open_items_than_a_statement_has_parameters(trusted: Cluster, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: wide
inputs: {{type: object, properties: {{items: {{type: array}}}}}}
steps:
  each: {{foreach: "${{{{ inputs.items }}}}", concurrency: 1, task: "{STEPS}:echo", with: {{value: "${{{{ item }}}}"}}}}
""",
    )
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"items": list(range(70_000))}))
    started = trusted.cli("run", str(path), "--detach", "--inputs-file", str(inputs))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    result = trusted.cli("cancel", run_id)
    assert result.returncode == 0, result.stderr
    view = json.loads(trusted.cli("status", run_id, "--json").stdout)
    assert view["status"] == "cancelled"
    assert view["steps"]["each"]["items"] == {"total": 70_000, "cancelled": 70_000}
