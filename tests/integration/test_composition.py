"""Sub-workflows on real workers, PostgreSQL and Redis, through the CLI as a user types it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"

LEAF = f"""
name: leaf
inputs: {{type: object, required: [n], properties: {{n: {{type: integer}}}}}}
steps:
  add:
    task: "{STEPS}:add"
    with: {{a: "${{{{ inputs.n }}}}", b: 100}}
outputs: {{n: "${{{{ steps.add.output }}}}"}}
"""
MID = """
name: mid
steps:
  twice:
    workflow: leaf
    foreach: ["${{ inputs.n }}", "${{ inputs.n + 1 }}"]
    with: {n: "${{ item }}"}
outputs: {sum: "${{ steps.twice.output[0].n + steps.twice.output[1].n }}"}
"""
TOP = """
name: top
steps:
  each:
    workflow: mid
    foreach: [1, 10, 20]
    concurrency: 2
    with: {n: "${{ item }}"}
  total:
    needs: each
    task: "tests.integration.steps:total"
    with:
      values: ["${{ steps.each.output[0].sum }}", "${{ steps.each.output[1].sum }}", "${{ steps.each.output[2].sum }}"]
outputs: {total: "${{ steps.total.output }}"}
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status(cluster: Cluster, run_id: str) -> dict[str, Any]:
    return json.loads(ok(cluster.cli("status", run_id, "--json")))


def children(cluster: Cluster, run_id: str) -> list[dict[str, Any]]:
    return json.loads(ok(cluster.cli("runs", "--parent", run_id, "--json")))


def test_three_levels_inside_a_foreach_hand_their_outputs_back_up(cluster: Cluster, tmp_path: Path) -> None:
    for name, text in (("leaf", LEAF), ("mid", MID)):
        ok(cluster.cli("workflows", "register", str(write(tmp_path, text, f"{name}.yaml"))))
    cluster.start_worker()

    run_id = cluster.start(write(tmp_path, TOP, "top.yaml"))
    view = cluster.wait(run_id)

    # Then: mid(n) = (n + 100) + (n + 1 + 100); the top adds the three
    assert view["status"] == "succeeded", view
    assert view["outputs"] == {"total": (201 + 2) + (201 + 20) + (201 + 40)}
    mids = children(cluster, run_id)
    assert sorted(c["workflow"] for c in mids) == ["mid"] * 3
    assert set(view["steps"]["each"]["child_runs"].values()) == {c["run_id"] for c in mids}
    leaves = children(cluster, mids[0]["run_id"])
    assert len(leaves) == 2
    assert status(cluster, leaves[0]["run_id"])["parent"] == {
        "run_id": mids[0]["run_id"],
        "step": "twice",
        "item_index": leaves[0]["inputs"]["n"] - mids[0]["inputs"]["n"],
    }


def test_a_failing_child_fails_its_parent_and_lands_in_the_dlq_with_its_error(cluster: Cluster, tmp_path: Path) -> None:
    broken = f"name: broken\nsteps:\n  charge: {{task: '{STEPS}:fail', with: {{message: card declined}}}}\n"
    ok(cluster.cli("workflows", "register", str(write(tmp_path, broken, "broken.yaml"))))
    cluster.start_worker()
    parent = write(tmp_path, "name: parent\nsteps:\n  pay: {workflow: broken}\n", "parent.yaml")

    run_id = cluster.start(parent)
    view = cluster.wait(run_id)

    child = children(cluster, run_id)[0]
    assert view["status"] == "failed"
    assert view["steps"]["pay"]["error"] == (
        f"ChildRunFailed: child run {child['run_id']} (broken) failed: charge: ValueError: card declined"
    )
    entries = json.loads(ok(cluster.cli("dlq", "list", "--json")))
    mine = [e for e in entries if e["run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["task"] == "workflow:broken" and "card declined" in mine[0]["error"]


def test_cancelling_a_parent_cancels_two_levels_of_children(cluster: Cluster, tmp_path: Path) -> None:
    waiter = "name: waiter\nsteps:\n  hold: {wait: {event: never}}\n"
    middle = "name: middle\nsteps:\n  down: {workflow: waiter}\n"
    for name, text in (("waiter", waiter), ("middle", middle)):
        ok(cluster.cli("workflows", "register", str(write(tmp_path, text, f"{name}.yaml"))))
    cluster.start_worker()
    run_id = cluster.start(write(tmp_path, "name: top\nsteps:\n  down: {workflow: middle}\n", "top.yaml"))
    deadline = time.monotonic() + 30
    while not children(cluster, run_id) or not children(cluster, children(cluster, run_id)[0]["run_id"]):
        assert time.monotonic() < deadline, "the children never started"
        time.sleep(0.2)
    child = children(cluster, run_id)[0]["run_id"]
    grandchild = children(cluster, child)[0]["run_id"]

    ok(cluster.cli("cancel", run_id, "--by", "ops"))

    for member in (run_id, child, grandchild):
        assert cluster.wait(member)["status"] == "cancelled"
    assert status(cluster, grandchild)["steps"]["hold"]["status"] == "cancelled"


UPSTREAM = f"""
name: upstream
steps:
  a: {{task: "{STEPS}:nap", with: {{value: "${{{{ inputs.n }}}}", seconds: 0.05}}}}
  b: {{task: "{STEPS}:nap", with: {{value: "${{{{ inputs.n }}}}", seconds: 0.05}}}}
outputs: {{n: "${{{{ steps.a.output }}}}"}}
"""
DOWNSTREAM = f"""
name: downstream
on:
  - after: upstream
    inputs: {{n: "${{{{ run.outputs.n }}}}"}}
steps:
  echo: {{task: "{STEPS}:echo", with: {{value: "${{{{ inputs.n }}}}"}}}}
"""


def test_a_chain_fires_exactly_once_per_upstream_run_with_two_workers(cluster: Cluster, tmp_path: Path) -> None:
    for name, text in (("upstream", UPSTREAM), ("downstream", DOWNSTREAM)):
        ok(cluster.cli("workflows", "register", str(write(tmp_path, text, f"{name}.yaml"))))
    cluster.start_worker(name="w1")
    cluster.start_worker(name="w2")

    upstream = [cluster.start("upstream", n=n) for n in range(8)]
    for run_id in upstream:
        assert cluster.wait(run_id)["status"] == "succeeded"

    # Then: one downstream run per upstream run, started by it, with its outputs as inputs
    deadline = time.monotonic() + 60
    while True:
        found = json.loads(ok(cluster.cli("runs", "--workflow", "downstream", "--limit", "100", "--json")))
        if len(found) >= 8 and all(r["status"] == "succeeded" for r in found):
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    # (a chained run is created in the transaction that ends its upstream run: none can come later)
    found = json.loads(ok(cluster.cli("runs", "--workflow", "downstream", "--limit", "100", "--json")))
    assert sorted(r["started_by"]["after"]["run_id"] for r in found) == sorted(upstream)
    assert sorted(r["inputs"]["n"] for r in found) == list(range(8))
    first = next(r["run_id"] for r in found if r["started_by"]["after"]["run_id"] == upstream[0])
    assert status(cluster, first)["started_by"]["after"] == {
        "run_id": upstream[0],
        "workflow": "upstream",
        "status": "succeeded",
    }


def test_an_emitted_event_starts_two_subscribed_workflows_once_each(cluster: Cluster, tmp_path: Path) -> None:
    for name in ("thumbnail", "indexer"):
        text = (
            f"name: {name}\non:\n  - event: invoice.uploaded\n    inputs: {{url: '${{{{ event.data.url }}}}'}}\n"
            f"steps:\n  work: {{task: '{STEPS}:echo', with: {{value: '${{{{ inputs.url }}}}'}}}}\n"
            f"outputs: {{url: '${{{{ steps.work.output }}}}'}}\n"
        )
        ok(cluster.cli("workflows", "register", str(write(tmp_path, text, f"{name}.yaml"))))
    cluster.start_worker()

    # By the CLI, by the Celery task (sent twice with one id: a redelivery), by the client
    by_cli = json.loads(ok(cluster.cli("emit", "invoice.uploaded", "--data", '{"url": "s3://a"}', "--json")))
    sent = cluster.python(
        "from orchestrator.worker.app import app\n"
        "for _ in range(2):\n"
        "    app.send_task('orchestrator.emit', kwargs={'event': 'invoice.uploaded', 'data': {'url': 's3://b'},"
        " 'emit_id': 'upload-b'})\n"
    )
    assert sent.returncode == 0, sent.stderr
    said = cluster.python(
        "from orchestrator.client import emit\nprint(len(emit('invoice.uploaded', {'url': 's3://c'})))"
    )
    assert said.stdout.strip() == "2", said.stderr

    assert sorted(s["workflow"] for s in by_cli["started"]) == ["indexer", "thumbnail"]
    deadline = time.monotonic() + 60
    while cluster.log("w0").count("Task orchestrator.emit[") < 4:  # each message: received, succeeded
        assert time.monotonic() < deadline, cluster.log("w0")
        time.sleep(0.3)
    for workflow in ("thumbnail", "indexer"):
        found = json.loads(ok(cluster.cli("runs", "--workflow", workflow, "--json")))
        assert sorted(r["inputs"]["url"] for r in found) == ["s3://a", "s3://b", "s3://c"]
        for run in found:
            assert cluster.wait(run["run_id"])["outputs"] == {"url": run["inputs"]["url"]}


def test_a_failed_run_is_compensated_in_reverse_order_on_real_workers(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    mark = "tests.integration.wait_steps:mark"
    text = f"""
name: saga
steps:
  reserve:
    task: {mark}
    with: {{path: "{ledger}", name: reserve}}
    compensate: {{task: {mark}, with: {{path: "{ledger}", name: "undo-${{{{ output }}}}"}}}}
  charge:
    needs: reserve
    task: {mark}
    with: {{path: "{ledger}", name: charge}}
    compensate: {{task: {mark}, with: {{path: "{ledger}", name: "undo-${{{{ output }}}}"}}}}
  ship:
    needs: charge
    task: {STEPS}:fail
    with: {{message: no courier}}
"""
    cluster.start_worker()
    view = cluster.wait(cluster.start(write(tmp_path, text)))

    assert view["status"] == "failed" and view["error"] == "ship: ValueError: no courier"
    assert view["compensated"] is True
    starts = [line.split()[1] for line in ledger.read_text().splitlines() if line.startswith("start")]
    assert starts == ["reserve", "charge", "undo-charge", "undo-reserve"]
