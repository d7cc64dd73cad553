"""Sub-workflows in-process on SQLite: child runs started, waited on, failed, retried, cancelled,
paused and resumed with their parents, with a recording transport standing in for the broker
(the integration tier runs the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.definition import WorkflowBuilder, build_plan
from orchestrator.errors import InvalidDefinition
from orchestrator.runtime import operations, repair
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.reconciler import reconcile
from orchestrator.runtime.views import run_view, runs_view
from orchestrator.settings import get_settings
from orchestrator.store import now
from tests.unit.harness import Ledger, drive, state

OPS = Who("ops")


def register(engine: Engine, wf: WorkflowBuilder) -> None:
    operations.register(engine, build_plan(wf.build(), check_tasks=False))


def submit(engine: Engine, wf: WorkflowBuilder, inputs: dict[str, Any] | None = None, go: bool = True) -> str:
    run_id = operations.submit(engine, build_plan(wf.build(), check_tasks=False), inputs or {}).run_id
    if go:
        drive(engine)
    return run_id


def view(engine: Engine, run_id: str) -> dict[str, Any]:
    return run_view(engine.repo, run_id)


def leaf() -> WorkflowBuilder:
    wf = WorkflowBuilder("leaf", inputs={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
    doubled = wf.step("double", "m:double", with_={"n": "${{ inputs.n * 2 }}"})
    wf.output("n", doubled.output["n"])
    return wf


def mid() -> WorkflowBuilder:
    wf = WorkflowBuilder("mid")
    child = wf.workflow("leaf", "leaf", with_={"n": "${{ inputs.n + 1 }}"})
    wf.output("n", child.output["n"])
    return wf


def test_three_levels_inside_a_foreach_hand_their_outputs_back_up(engine: Engine, ledger: Ledger) -> None:
    register(engine, leaf())
    register(engine, mid())
    top = WorkflowBuilder("top")
    each = top.workflow("each", "mid", foreach=[1, 2, 3], concurrency=2, with_={"n": "${{ item }}"})
    top.output("all", each.output)

    run_id = submit(engine, top)

    # Then: each item ran mid, which ran leaf: (n + 1) * 2, in item order
    assert view(engine, run_id)["outputs"] == {"all": [{"n": 4}, {"n": 6}, {"n": 8}]}
    assert ledger.calls == ["m:double"] * 3
    children = runs_view(engine.repo, None, None, 100, parent=run_id)
    assert len(children) == 3 and all(c["workflow"] == "mid" for c in children)
    grandchild = runs_view(engine.repo, None, None, 100, parent=children[0]["run_id"])[0]
    shown = view(engine, grandchild["run_id"])
    assert shown["parent"] == {"run_id": children[0]["run_id"], "step": "leaf"}
    assert view(engine, children[0]["run_id"])["steps"]["leaf"]["child_run"] == grandchild["run_id"]
    assert set(view(engine, run_id)["steps"]["each"]["child_runs"].values()) == {c["run_id"] for c in children}


def test_a_failing_child_fails_its_step_with_the_childs_error_and_run_id(engine: Engine) -> None:
    broken = WorkflowBuilder("broken")
    broken.step("explode", "m:boom")
    register(engine, broken)
    parent = WorkflowBuilder("parent")
    parent.workflow("call", "broken", retry={"max_attempts": 2, "delay": "1s", "jitter": False})

    run_id = submit(engine, parent)
    with engine.repo.transaction() as tx:
        tx.update_step(tx.steps(run_id)["call"].id, not_before=now())  # the retry is due now
    _wake_retries(engine, run_id)

    shown = view(engine, run_id)
    children = runs_view(engine.repo, None, None, 10, parent=run_id)
    assert shown["status"] == "failed"
    assert len(children) == 2, "each attempt starts a new child run"
    error = shown["steps"]["call"]["error"]
    assert error.startswith("ChildRunFailed: child run ") and "(broken) failed: explode: RuntimeError: boom" in error
    assert children[0]["run_id"] in error  # the newest child's id
    with engine.repo.transaction() as tx:
        entries = tx.dead_letters(run_id=run_id)
    assert len(entries) == 1 and entries[0].task == "workflow:broken" and "boom" in (entries[0].error or "")


def _wake_retries(engine: Engine, run_id: str) -> None:
    from orchestrator.runtime.waking import wake_step

    with engine.repo.transaction() as tx:
        row = tx.steps(run_id)["call"]
    engine.send(wake_step(engine, row.id))
    drive(engine)


def test_cancelling_a_parent_cancels_two_levels_of_children(engine: Engine, ledger: Ledger) -> None:
    waiter = WorkflowBuilder("waiter")
    waiter.wait("hold", event="never")
    register(engine, waiter)
    middle = WorkflowBuilder("middle")
    middle.workflow("down", "waiter")
    register(engine, middle)
    top = WorkflowBuilder("top")
    top.workflow("down", "middle")
    run_id = submit(engine, top)
    child = runs_view(engine.repo, None, None, 10, parent=run_id)[0]["run_id"]
    grandchild = runs_view(engine.repo, None, None, 10, parent=child)[0]["run_id"]
    assert state(engine, grandchild) == ("running", {"hold": "waiting"})

    done = operations.cancel(engine, run_id, OPS)

    assert done.children == [child, grandchild]
    for member in (run_id, child, grandchild):
        assert state(engine, member)[0] == "cancelled"
    assert state(engine, grandchild)[1] == {"hold": "cancelled"}


def test_pausing_and_resuming_a_parent_does_the_same_to_its_children(engine: Engine, ledger: Ledger) -> None:
    gated = WorkflowBuilder("gated")
    gate = gated.wait("gate", event="go")
    gated.step("after", "m:after", needs=[gate])
    register(engine, gated)
    top = WorkflowBuilder("top")
    top.workflow("child", "gated")
    run_id = submit(engine, top)
    child = runs_view(engine.repo, None, None, 10, parent=run_id)[0]["run_id"]

    repair.pause(engine, run_id, OPS)
    assert state(engine, child)[0] == "paused"
    from orchestrator.runtime.signal import signal

    signal(engine, "go", None, {"ok": True})
    drive(engine)
    assert ledger.calls == [], "nothing starts in a paused child"

    repair.resume(engine, run_id, OPS)
    drive(engine)
    assert state(engine, child)[0] == "succeeded"
    assert state(engine, run_id) == ("succeeded", {"child": "succeeded"})
    assert ledger.calls == ["m:after"]


def test_nesting_deeper_than_the_limit_fails_the_step_with_a_clear_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_MAX_DEPTH", "1")
    get_settings.cache_clear()
    try:
        register(engine, leaf())
        register(engine, mid())
        top = WorkflowBuilder("top")
        top.workflow("call", "mid", with_={"n": 1})
        run_id = submit(engine, top)
    finally:
        get_settings.cache_clear()
    child = runs_view(engine.repo, None, None, 10, parent=run_id)[0]["run_id"]
    assert state(engine, run_id)[0] == "failed"
    error = view(engine, child)["steps"]["leaf"]["error"]
    assert error == "ChildRunRefused: workflow leaf would be nested 2 levels deep; ORCHESTRATOR_MAX_DEPTH allows 1"


@pytest.mark.parametrize(
    ("workflow", "inputs", "expected"),
    [
        ("nothing", {}, "ChildRunRefused: no workflow named 'nothing' is registered"),
        ("leaf", {"n": "two"}, "ChildRunRefused: the child's inputs: inputs.n: 'two' is not of type 'integer'"),
        ("leaf@0000", {"n": 1}, "ChildRunRefused: workflow leaf has no version '0000'"),
    ],
)
def test_a_child_that_cannot_start_fails_its_step_once_and_is_dead_lettered(
    engine: Engine, workflow: str, inputs: dict[str, Any], expected: str
) -> None:
    register(engine, leaf())
    top = WorkflowBuilder("top")
    top.workflow("call", workflow, with_=inputs, retry={"max_attempts": 3})

    run_id = submit(engine, top)

    shown = view(engine, run_id)
    assert shown["status"] == "failed"
    assert shown["steps"]["call"]["error"].startswith(expected)
    assert shown["steps"]["call"]["attempts"] == 1, "never retried: it would fail the same way"
    assert runs_view(engine.repo, None, None, 10, parent=run_id) == []
    assert len(shown["dead_letters"]) == 1


def test_a_child_no_step_waits_on_any_more_is_cancelled(engine: Engine) -> None:
    waiter = WorkflowBuilder("waiter")
    waiter.wait("hold", event="never")
    register(engine, waiter)
    top = WorkflowBuilder("top")
    top.workflow("a", "waiter")
    top.workflow("b", "waiter")
    run_id = submit(engine, top)
    a, b = (view(engine, run_id)["steps"][s]["waiting_for"]["child_run"] for s in ("a", "b"))

    # When: a person skips step a; the child it waited on is stopped at once
    repair.skip(engine, run_id, "a", OPS)
    assert state(engine, a)[0] == "cancelled"
    assert state(engine, b)[0] == "running"

    # When: someone cancels the other child itself: its step fails, and so does the parent
    operations.cancel(engine, b, OPS)
    drive(engine)
    assert state(engine, run_id)[0] == "failed"
    assert view(engine, run_id)["steps"]["b"]["error"].endswith("cancelled")


def test_a_parent_failing_fast_leaves_no_child_running(engine: Engine) -> None:
    waiter = WorkflowBuilder("waiter")
    waiter.wait("hold", event="never")
    register(engine, waiter)
    top = WorkflowBuilder("top")
    top.workflow("slow", "waiter")
    top.step("bad", "m:boom")
    engine_stopper = engine.stopper
    engine.stopper = None  # the process dies before it stops the child

    run_id = submit(engine, top)
    child = runs_view(engine.repo, None, None, 10, parent=run_id)[0]["run_id"]
    assert state(engine, run_id)[0] == "failed"
    assert state(engine, child)[0] == "running"

    engine.stopper = engine_stopper
    assert reconcile(engine).orphans == 1
    assert state(engine, child) == ("cancelled", {"hold": "cancelled"})
    assert reconcile(engine).orphans == 0


def test_a_workflow_that_calls_itself_is_a_validation_error() -> None:
    direct = WorkflowBuilder("loop")
    direct.workflow("again", "loop")
    with pytest.raises(InvalidDefinition, match=r"a workflow cannot call itself \(loop -> loop\)"):
        build_plan(direct.build(), check_tasks=False)

    a = WorkflowBuilder("a")
    a.workflow("to-b", "b")
    b = WorkflowBuilder("b")
    b.workflow("to-c", "c")
    c = WorkflowBuilder("c")
    c.workflow("to-a", "a@abc")
    known = {w.name: w for w in (b.build(), c.build())}
    with pytest.raises(InvalidDefinition, match=r"a workflow cannot call itself \(a -> b -> c -> a\)"):
        build_plan(a.build(), check_tasks=False, known_workflows=known)

    plan = build_plan(b.build(), check_tasks=False, known_workflows={})
    assert [(p.step, p.message) for p in plan.warnings] == [
        ("to-c", "workflow 'c' is not registered (orchestrator workflows register FILE)")
    ]


# The reviewer's findings, each a regression test


def test_a_child_undoing_its_cancel_is_not_cancelled_again_by_the_sweep(engine: Engine, ledger: Ledger) -> None:
    booked = WorkflowBuilder("booked")
    booked._data["compensate_on_cancel"] = True
    book = booked.step("book", "m:book", compensate={"task": "m:unbook"})
    booked.wait("hold", event="never", needs=[book])
    register(engine, booked)
    top = WorkflowBuilder("top")
    top.workflow("child", "booked")
    run_id = submit(engine, top)
    child = runs_view(engine.repo, None, None, 10, parent=run_id)[0]["run_id"]

    operations.cancel(engine, run_id, OPS)
    reconcile(engine)  # sees the child: still open, its parent's step cancelled
    operations.cancel(engine, child, OPS)  # and someone cancels it again
    drive(engine)

    assert state(engine, child)[0] == "cancelled"
    assert view(engine, child)["compensated"] is True
    assert ledger.calls == ["m:book", "m:unbook"]


def test_a_failed_item_of_a_workflow_foreach_replays_as_a_new_child(engine: Engine, ledger: Ledger) -> None:
    from orchestrator.dlq import replay

    flaky = WorkflowBuilder("flaky", inputs={"type": "object"})
    flaky.step("work", "m:boom", with_={"ok": "${{ inputs.ok }}"})
    register(engine, flaky)
    top = WorkflowBuilder("top")
    top.workflow("each", "flaky", foreach=[True, False], with_={"ok": "${{ item }}"})
    run_id = submit(engine, top)
    assert state(engine, run_id)[0] == "failed"
    with engine.repo.transaction() as tx:
        entries = tx.dead_letters(run_id=None)
    mine = [e for e in entries if e.status == "open"]
    assert [(e.run_id, e.step, e.item_index) for e in mine] == [(run_id, "each", 1)], (
        "the child's own entry is resolved"
    )

    register(engine, _fixed())  # the child workflow is mended
    replay(engine, [mine[0].id])
    drive(engine)

    assert state(engine, run_id)[0] == "succeeded"
    assert len(runs_view(engine.repo, None, "flaky", 10)) == 3, "the replayed item started a new child run"


def _fixed() -> WorkflowBuilder:
    wf = WorkflowBuilder("flaky", inputs={"type": "object"})
    wf.step("work", "m:fine")
    return wf


def test_a_paused_parent_starts_no_new_child_until_it_is_resumed(engine: Engine) -> None:
    broken = WorkflowBuilder("broken")
    broken.step("explode", "m:boom")
    register(engine, broken)
    parent = WorkflowBuilder("parent")
    parent.workflow("call", "broken", retry={"max_attempts": 2, "delay": "1s", "jitter": False})
    run_id = submit(engine, parent)
    repair.pause(engine, run_id, OPS)
    with engine.repo.transaction() as tx:
        tx.update_step(tx.steps(run_id)["call"].id, not_before=now())  # its retry is due
    _wake_retries(engine, run_id)
    assert len(runs_view(engine.repo, None, "broken", 10)) == 1, "nothing starts in a paused run"

    repair.resume(engine, run_id, OPS)
    drive(engine)
    assert len(runs_view(engine.repo, None, "broken", 10)) == 2
    assert state(engine, run_id)[0] == "failed"


def test_a_compensated_run_and_a_given_up_child_refuse_a_retry(engine: Engine) -> None:
    from orchestrator.errors import Refused

    saga = WorkflowBuilder("saga")
    first = saga.step("reserve", "m:reserve", compensate={"task": "m:release"})
    saga.step("ship", "m:boom", needs=[first])
    run_id = submit(engine, saga)
    with pytest.raises(Refused, match="was compensated"):
        repair.retry(engine, run_id, OPS)

    broken = WorkflowBuilder("broken")
    broken.step("explode", "m:boom")
    register(engine, broken)
    parent = WorkflowBuilder("parent")
    parent.workflow("call", "broken")
    parent_id = submit(engine, parent)
    child = runs_view(engine.repo, None, None, 10, parent=parent_id)[0]["run_id"]
    with pytest.raises(Refused, match=f"retry the parent run {parent_id} instead"):
        repair.retry(engine, child, OPS)
