"""State machines in-process on SQLite: visits, transitions, loops, gates, ends and the static
checks, with a recording transport standing in for the broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.errors import InvalidDefinition
from orchestrator.runtime import approval, operations
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import history_view, run_view
from orchestrator.settings import get_settings
from tests.unit.harness import Ledger, drive

ROOT = Path(__file__).resolve().parents[2]
ALICE = Who("alice")


def submit(engine: Engine, text: str, inputs: dict[str, Any] | None = None) -> str:
    run_id = operations.submit(engine, build_plan(load_text(text).workflow, check_tasks=False), inputs or {}).run_id
    drive(engine)
    return run_id


COUNTER = """
name: counter
initial: count
max_transitions: 50
states:
  count:
    task: m:count
    with: {n: "${{ (steps.count.output.n if steps.count.output else 0) + 1 }}"}
    transitions:
      - {to: count, if: "${{ output.n < 3 }}"}
      - {to: finish}
  finish: {end: succeeded}
outputs: {n: "${{ steps.count.output.n }}"}
"""


def test_a_state_that_loops_records_every_visit_and_ends(engine: Engine, ledger: Ledger) -> None:
    run_id = submit(engine, COUNTER)

    view = run_view(engine.repo, run_id)
    assert view["status"] == "succeeded"
    assert view["outputs"] == {"n": 3}
    assert list(view["steps"]) == ["count", "count#2", "count#3", "finish"]
    assert [view["steps"][s]["output"] for s in ("count", "count#2", "count#3")] == [
        {"task": "m:count", "n": 1},
        {"task": "m:count", "n": 2},
        {"task": "m:count", "n": 3},
    ]
    assert view["state"] == "finish"
    assert [(t["from"], t["to"], t["reason"]) for t in view["transitions"]] == [
        ("count", "count", "${{ output.n < 3 }}"),
        ("count", "count", "${{ output.n < 3 }}"),
        ("count", "finish", "default"),
    ]
    assert ledger.calls == ["m:count"] * 3


def test_passing_max_transitions_fails_the_run(engine: Engine) -> None:
    run_id = submit(engine, COUNTER.replace("max_transitions: 50", "max_transitions: 2"))
    view = run_view(engine.repo, run_id)
    assert view["status"] == "failed"
    assert view["error"] == "NoTransition: the run passed max_transitions (2)"


def test_an_end_failed_state_fails_the_run(engine: Engine) -> None:
    text = "name: f\ninitial: a\nstates:\n  a: {task: m:a, next: bad}\n  bad: {end: failed}\n"
    view = run_view(engine.repo, submit(engine, text))
    assert view["status"] == "failed" and view["error"] == "bad: reached end state 'bad' (end: failed)"


def test_when_no_transition_applies_the_run_fails_naming_the_state(engine: Engine) -> None:
    text = (
        "name: f\ninitial: a\nstates:\n  a:\n    task: m:a\n    transitions:\n"
        "      - {to: z, if: '${{ output.task == \"nope\" }}'}\n  z: {end: succeeded}\n"
    )
    view = run_view(engine.repo, submit(engine, text))
    assert view["error"] == "a: NoTransition: no transition of state 'a' applies"


def test_the_feature_flow_example_loops_once_through_rejection_then_reaches_done(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator import examples

    monkeypatch.setenv("ORCHESTRATOR_ARTIFACT_ROOT", str(tmp_path))
    get_settings.cache_clear()
    engine.resolve = lambda name: getattr(examples, name.split(":")[1])
    text = (ROOT / "config" / "examples" / "feature-flow.yaml").read_text()
    try:
        run_id = submit(engine, text, {"feature": "search"})
        assert run_view(engine.repo, run_id)["state"] == "review"

        # When: the reviewer rejects with feedback: back to draft, which rewrites the file, then review again
        approval.decide(engine, run_id, "review", ALICE, "rejected", comment="add ranking")
        drive(engine)
        view = run_view(engine.repo, run_id)
        assert view["state"] == "review" and list(view["steps"]) == ["draft", "review", "draft#2", "review#2"]
        assert view["steps"]["draft#2"]["output"] == {"path": "docs/search.md", "revision": 2}

        # When: the second review approves with the keyword: publish, then done
        approval.decide(engine, run_id, "review", ALICE, "approved", keyword="APPROVED")
        drive(engine)
    finally:
        get_settings.cache_clear()
    view = run_view(engine.repo, run_id)
    assert view["status"] == "succeeded"
    assert view["outputs"] == {"published": {"published": "docs/search.md", "revision": 2}}
    assert [t["to"] for t in view["transitions"]] == ["review", "draft", "review", "publish", "done"]
    assert "add ranking" in (tmp_path / "docs" / "search.md").read_text()
    reasons = [e["detail"]["reason"] for e in history_view(engine.repo, run_id) if e["kind"] == "state.transition"]
    assert reasons[1] == "default" and reasons[3] == "${{ output.decision == 'approved' }}"


def test_a_gate_not_met_fails_the_attempt_and_the_retry_looks_again(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ARTIFACT_ROOT", str(tmp_path))
    get_settings.cache_clear()
    text = """
name: gated
initial: build
states:
  build:
    task: m:build
    gate: {artifacts: ["out/${{ inputs.name }}.bin"]}
    retry: {max_attempts: 2, delay: 1s, jitter: false}
    next: done
  done: {end: succeeded}
"""
    calls: list[int] = []

    def build(**_: Any) -> str:  # the artifact appears only on the second attempt
        calls.append(1)
        if len(calls) == 2:
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "app.bin").write_text("x")
        return "built"

    engine.resolve = lambda name: build
    try:
        run_id = submit(engine, text, {"name": "app"})
    finally:
        get_settings.cache_clear()
    view = run_view(engine.repo, run_id, with_attempts=True)
    assert view["status"] == "succeeded", view
    log = view["steps"]["build"]["attempt_log"]
    assert [a["status"] for a in log] == ["failed", "succeeded"]
    assert log[0]["error"].startswith("GateNotMet: gate artifact out/app.bin does not exist under ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("states:\n  a: {task: m:a, next: b}\n  b: {end: succeeded}\n", "a state machine needs initial"),
        ("initial: a\nstates:\n  a: {task: m:a, next: nowhere}\n  b: {end: succeeded}\n", "unknown state 'nowhere'"),
        (
            "initial: a\nstates:\n  a: {task: m:a, next: c}\n  b: {end: succeeded}\n  c: {end: succeeded}\n",
            "step 'b': is unreachable",
        ),
        (
            "initial: a\nstates:\n  a: {task: m:a, next: b}\n  b: {task: m:b, next: a}\n  c: {end: succeeded}\n",
            "step 'a': has no path to an end state",
        ),
        ("initial: a\nstates:\n  a: {task: m:a}\n  b: {end: succeeded}\n", "step 'a': has no next, transitions or end"),
        (
            "initial: a\nstates:\n  a: {task: m:a, needs: [b], next: b}\n  b: {end: succeeded}\n",
            "needs does not apply to a state",
        ),
        ("initial: a\nsteps:\n  a: {task: m:a}\n", "initial and max_transitions apply only to a workflow with states"),
    ],
)
def test_the_static_checks_of_a_state_machine(text: str, expected: str) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        build_plan(load_text("name: m\n" + text).workflow, check_tasks=False)
    assert expected in "\n".join(str(p) for p in caught.value.problems)


def test_retry_of_a_state_machine_takes_no_step_or_from(engine: Engine) -> None:
    from orchestrator.errors import Refused
    from orchestrator.runtime import repair

    text = "name: f\ninitial: a\nstates:\n  a: {task: m:boom, next: z}\n  z: {end: succeeded}\n"
    run_id = submit(engine, text)
    assert run_view(engine.repo, run_id)["status"] == "failed"
    with pytest.raises(Refused, match="do not apply to a state machine"):
        repair.retry(engine, run_id, ALICE, from_step="a")
