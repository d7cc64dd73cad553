"""Hostile data through the Python doors (operations, the client's calls, the Celery tasks' guard):
too deep, too large, not UTF-8, of the wrong type. Each is one clear error and nothing is stored."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from orchestrator.definition import WorkflowBuilder, build_plan, load_text
from orchestrator.errors import InputsError, NotFound, PayloadTooLarge, UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.checks import check_inputs, parse_json
from orchestrator.runtime.emit import emit
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.schedules import fire_due, trigger
from orchestrator.runtime.signal import signal
from orchestrator.runtime.views import history_view, run_view, runs_view
from orchestrator.schedule.arithmetic import Spec
from orchestrator.store import now
from orchestrator.worker import tasks
from tests.unit.harness import Ledger, drive


def _deep(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    cursor = root
    for _ in range(levels):
        cursor["a"] = {}
        cursor = cursor["a"]
    return root


def _runs(engine: Engine) -> int:
    with engine.repo.transaction() as tx:
        return len(tx.runs(None, None, 10))


@pytest.fixture
def plan() -> Any:
    return build_plan(_paying().build(), check_tasks=False)


def _paying() -> WorkflowBuilder:
    wf = WorkflowBuilder("pay")
    wf.wait("pay", event="paid", key="${{ inputs.order }}")
    return wf


@pytest.mark.parametrize(
    ("inputs", "key", "error", "message"),
    [
        ({"order": _deep(10_000)}, None, UsageError, "the inputs is nested more than 64 deep"),
        ({"order": "a" * 10_000_000}, None, PayloadTooLarge, "the limit is 1048576 bytes"),
        ({"order": "\udcff"}, None, UsageError, "not valid UTF-8"),
        ({"order": "A1"}, "k" * 10_000_000, UsageError, "an idempotency key is a string of 1 to 200 characters"),
        ({"order": "A1"}, 42, UsageError, "an idempotency key is a string"),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_stored(
    engine: Engine, plan: Any, inputs: dict[str, Any], key: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        operations.submit(engine, plan, inputs, key)
    assert _runs(engine) == 0


def test_a_shared_value_repeated_past_the_limit_is_refused_without_serialising_it() -> None:
    # Given inputs built from YAML aliases: one list shared at every level, 9**9 strings in all
    level: Any = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge, match="more than"):
        check_inputs(_paying().build(), {"x": level})
    assert time.monotonic() - started < 1


def test_a_long_workflow_name_is_not_repeated_whole(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        operations.registered_plan(engine, "n" * 10_000_000)
    assert len(info.value.message) < 200
    assert "n" * 99 + "\u2026" in info.value.message


def test_signal_and_emit_refuse_deep_data_and_names_that_are_not_text(engine: Engine, plan: Any) -> None:
    with pytest.raises(UsageError, match="nested more than 64 deep"):
        signal(engine, "paid", "A1", _deep(10_000))
    with pytest.raises(UsageError, match="the signal's key is nested more than 64 deep"):
        signal(engine, "paid", _deep(10_000), 1)
    with pytest.raises(UsageError, match="nested more than 64 deep"):
        emit(engine, "paid", _deep(10_000))
    with pytest.raises(UsageError, match="is not an event name"):
        emit(engine, 123)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--by must name someone"):
        operations.Who(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 64 deep"),
        (b'"\xff"', "not UTF-8 text"),
        ('"\udcff"', "not UTF-8 text"),
        ('"' + "a" * 2_000_000 + '"', "the limit is 1048576 bytes"),
    ],
)
def test_parse_json_refuses_what_check_payload_refuses(raw: str | bytes, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_json(raw, "the body")


@pytest.mark.parametrize(
    ("task", "args", "kwargs", "reason"),
    [
        (tasks.execute_step, (), {"step_run_id": "abc", "dispatch_id": "d"}, "step_run_id must be an integer"),
        (tasks.execute_step, (), {"step_run_id": 1.5, "dispatch_id": "d"}, "step_run_id must be an integer"),
        (tasks.execute_step, (2**70, "d"), {}, "step_run_id must be an integer of at most 64 bits, not 1180591"),
        (tasks.wake, (), {"step_run_id": -(2**63) - 1}, "step_run_id must be an integer of at most 64 bits"),
        (tasks.execute_step, (), {"step_run_id": 1}, "missing a required argument: 'dispatch_id'"),
        (tasks.execute_step, (1, "d", 3), {}, "too many positional arguments"),
        (tasks.submit, (), {"workflow": "w", "inputs": [1]}, "inputs must be an object or null"),
        (tasks.submit, (), {"workflow": "w", "nope": 1}, "unexpected keyword argument 'nope'"),
        (tasks.signal, (), {"event": "e", "data": _deep(100)}, "nested more than 64 deep"),
        (tasks.emit, (), {"event": "e", "data": "a" * 2_000_000}, "the limit is 1048576 bytes"),
    ],
)
def test_the_task_guard_names_what_is_wrong(
    task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str
) -> None:
    found = task.refusal(args, kwargs)
    assert found is not None and reason in found


def test_the_task_guard_lets_good_messages_through() -> None:
    assert tasks.execute_step.refusal((7, "d"), {}) is None
    assert tasks.execute_step.refusal((2**63 - 1, "d"), {}) is None
    assert (
        tasks.submit.refusal((), {"workflow": "w", "inputs": {"a": [1, {"b": None}]}, "idempotency_key": "k"}) is None
    )
    assert tasks.signal.refusal((), {"event": "e", "key": 3, "data": [1, 2]}) is None


# 40 YAML mappings around an expression of 30 nested lists: a value 70 deep, past the 64 inputs allow (a file
# itself may nest 64 deep, an expression 32)
DEEP_70 = "{a: " * 40 + '"${{ ' + "[" * 30 + "1" + "]" * 30 + ' }}"' + "}" * 40


def _register(engine: Engine, text: str) -> None:
    operations.register(engine, build_plan(load_text(text).workflow, check_tasks=False))


def test_a_child_run_s_inputs_nested_too_deep_fail_the_parent_step_once(engine: Engine, ledger: Ledger) -> None:
    # Given a parent whose workflow step passes the child a value 70 deep, built after a first step
    _register(engine, 'name: leaf\nsteps:\n  only: {task: "m:work"}\n')
    call = f"{{needs: [a], workflow: leaf, with: {{deep: {DEEP_70}}}}}"
    top = f'name: top\nsteps:\n  a: {{task: "m:first"}}\n  call: {call}\n'
    run_id = operations.submit(engine, build_plan(load_text(top).workflow, check_tasks=False), {}).run_id
    drive(engine)
    # Then the step fails with one line, the run fails, and the first step ran once (no redelivery)
    view = run_view(engine.repo, run_id)
    assert view["status"] == "failed"
    assert view["steps"]["a"]["status"] == "succeeded"
    assert view["steps"]["call"]["status"] == "failed"
    assert (
        view["steps"]["call"]["error"] == "ChildRunRefused: the child's inputs: the inputs is nested more than 64 deep"
    )
    assert ledger.calls == ["m:first"]


def test_an_on_trigger_whose_inputs_are_too_deep_is_skipped_and_the_upstream_run_ends(engine: Engine) -> None:
    # Given an upstream run whose output is 70 deep, and a workflow started by its end with that output
    _register(
        engine,
        f'name: up\nsteps:\n  a: {{task: "m:a", with: {{d: {DEEP_70}}}}}\n'
        'outputs: {d: "${{ steps.a.output.d }}"}\n',
    )
    _register(
        engine, 'name: down\non:\n  - after: up\n    inputs: {d: "${{ run.outputs.d }}"}\nsteps:\n  b: {task: "m:b"}\n'
    )
    run_id = operations.submit(engine, operations.registered_plan(engine, "up"), {}).run_id
    drive(engine)
    # Then the upstream run succeeds, nothing of `down` starts, and the skip says why
    assert run_view(engine.repo, run_id)["status"] == "succeeded"
    assert runs_view(engine.repo, None, "down", 10) == []
    skipped = [e["detail"] for e in history_view(engine.repo, run_id) if e["kind"] == "run.chain_skipped"]
    assert skipped == [{"workflow": "down", "reason": "the inputs is nested more than 64 deep"}]


def test_a_schedule_tick_whose_inputs_are_too_deep_is_recorded_invalid_once(engine: Engine) -> None:
    # Given a schedule whose inputs are 70 deep
    _register(
        engine,
        f'name: tick\nsteps:\n  b: {{task: "m:b"}}\n'
        f"schedules:\n  - {{name: often, every: 10s, inputs: {{d: {DEEP_70}}}}}\n",
    )
    first = Spec(every_s=10).upcoming(now(), 1)[0]
    # When beat looks at the tick twice
    seen = [t[2] for t in fire_due(engine, first + timedelta(seconds=1)).ticks]
    again = [t[2] for t in fire_due(engine, first + timedelta(seconds=1)).ticks]
    # Then the tick is recorded invalid once, starts no run, and is not tried again
    assert seen == ["invalid"] and again == []
    assert runs_view(engine.repo, None, "tick", 10) == []
    with pytest.raises(InputsError, match="nested more than 64 deep"):
        trigger(engine, "tick/often", operations.Who("ops"))
