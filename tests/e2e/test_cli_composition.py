"""Composition through the CLI on the embedded default: sub-workflows, events, the feature-flow
example and a dry run replaying a recorded run, with no server and an SQLite file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import EXAMPLES, embedded, orchestrator
from tests.e2e.test_cli_waits import background, waiting

pytestmark = pytest.mark.e2e
__all__ = ["embedded"]

CHILD = """
name: price-one
inputs: {type: object, required: [n], properties: {n: {type: number}}}
steps:
  twice: {task: orchestrator.examples:multiply, with: {a: "${{ inputs.n }}", b: 2}}
outputs: {price: "${{ steps.twice.output }}"}
"""
PARENT = """
name: price-all
steps:
  each:
    workflow: price-one
    foreach: [1, 2, 3]
    with: {n: "${{ item }}"}
  sum:
    needs: each
    task: orchestrator.examples:total
    with: {values: "${{ [steps.each.output[0].price, steps.each.output[1].price, steps.each.output[2].price] }}"}
outputs: {total: "${{ steps.sum.output }}"}
"""


def test_a_sub_workflow_in_a_foreach_runs_embedded(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(PARENT)
    registered = orchestrator(embedded, tmp_path, "workflows", "register", "child.yaml")
    assert registered.returncode == 0, registered.stderr

    result = orchestrator(embedded, tmp_path, "run", "parent.yaml", "--json")

    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["outputs"] == {"total": 12}
    children = json.loads(orchestrator(embedded, tmp_path, "runs", "--parent", view["run_id"], "--json").stdout)
    assert sorted(c["outputs"]["price"] for c in children) == [2, 4, 6]


def test_validate_warns_of_an_unregistered_child_and_refuses_a_self_call(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "parent.yaml").write_text(PARENT)
    warned = orchestrator(embedded, tmp_path, "validate", "parent.yaml")
    assert warned.returncode == 0
    assert "warning: step 'each': workflow 'price-one' is not registered" in warned.stderr
    (tmp_path / "loop.yaml").write_text("name: loop\nsteps:\n  again: {workflow: loop}\n")
    refused = orchestrator(embedded, tmp_path, "validate", "loop.yaml")
    assert refused.returncode == 2
    assert "a workflow cannot call itself (loop -> loop)" in refused.stderr


def test_the_feature_flow_example_loops_through_rejection_then_publishes(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    example = str(EXAMPLES / "feature-flow.yaml")
    runner = background(embedded, tmp_path, "run", example, "-i", "feature=search", "--json")
    run_id = waiting(embedded, tmp_path, "review")
    rejected = orchestrator(embedded, tmp_path, "reject", run_id, "review", "--comment", "add ranking", "--by", "ana")
    assert rejected.returncode == 0, rejected.stderr
    assert waiting(embedded, tmp_path, "review#2") == run_id  # back through draft to a second review
    approved = orchestrator(embedded, tmp_path, "approve", run_id, "review", "--keyword", "APPROVED", "--by", "ana")
    assert approved.returncode == 0, approved.stderr

    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    final = json.loads(out)
    assert final["outputs"] == {"published": {"published": "docs/search.md", "revision": 2}}
    assert [t["to"] for t in final["transitions"]] == ["review", "draft", "review", "publish", "done"]
    assert "add ranking" in (tmp_path / "docs" / "search.md").read_text()
    history = orchestrator(embedded, tmp_path, "history", run_id, "--json")
    moves = [e["detail"] for e in json.loads(history.stdout) if e["kind"] == "state.transition"]
    assert moves[1] == {"from": "review", "to": "draft#2", "reason": "default"}


def test_emit_starts_a_subscribed_workflow_embedded(embedded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sub.yaml").write_text(
        "name: on-upload\non:\n  - event: file.uploaded\n    inputs: {name: '${{ event.data.name }}'}\n"
        "steps:\n  note: {task: orchestrator.examples:notify, with: {message: '${{ inputs.name }}'}}\n"
        "outputs: {said: '${{ steps.note.output }}'}\n"
    )
    assert orchestrator(embedded, tmp_path, "workflows", "register", "sub.yaml").returncode == 0
    emitted = orchestrator(embedded, tmp_path, "emit", "file.uploaded", "--data", '{"name": "a.pdf"}', "--json")
    assert emitted.returncode == 0, emitted.stderr
    started = json.loads(emitted.stdout)["started"]
    assert [s["workflow"] for s in started] == ["on-upload"]
    view = json.loads(orchestrator(embedded, tmp_path, "status", started[0]["run_id"], "--json").stdout)
    assert view["outputs"] == {"said": "sent: a.pdf"}
    assert view["started_by"]["event"]["name"] == "file.uploaded"


def test_a_dry_run_replays_a_recorded_run_against_a_changed_definition(
    embedded: dict[str, str], tmp_path: Path
) -> None:
    example = str(EXAMPLES / "if-else.yaml")
    recorded = json.loads(orchestrator(embedded, tmp_path, "run", example, "-i", "amount=5", "--json").stdout)
    assert recorded["steps"]["large-review"]["status"] == "skipped"
    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(example).read_text().replace("== 'large' }}", "== 'small' }}"))
    before = _content(tmp_path / "orchestrator.db")

    result = orchestrator(
        embedded,
        tmp_path,
        "run",
        str(changed),
        "-i",
        "amount=5",
        "--dry-run",
        "--mocks-from",
        recorded["run_id"],
        "--json",
    )

    # Then: the changed if sends the run down the other branch too, whose recorded output (it was
    # skipped: null) breaks the record step: the dry run says so, and exits 1 as the run would fail
    assert result.returncode == 1, result.stderr
    found = json.loads(result.stdout)
    changes = {c.get("step"): c for c in found["differences"]}
    assert changes["large-review"]["recorded"] == {"status": "skipped", "output": None}
    assert changes["large-review"]["now"] == {"status": "succeeded", "output": None}
    assert changes["record"]["now"]["status"] == "failed"
    assert changes[None] == {"outputs": True, "recorded": recorded["outputs"], "now": None}
    assert "small-review" not in changes
    assert _content(tmp_path / "orchestrator.db") == before, "the store is untouched"


def _content(path: Path) -> str:
    """A digest of every row of the SQLite store (its file's bytes move when its log is folded in)."""
    with sqlite3.connect(path) as connection:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
