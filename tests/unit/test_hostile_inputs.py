"""Hostile data through the Python doors (operations, the client's calls, the Celery tasks' guard):
too deep, too large, not UTF-8, of the wrong type. Each is one clear error and nothing is stored."""

from __future__ import annotations

import time
from typing import Any

import pytest

from orchestrator.definition import WorkflowBuilder, build_plan
from orchestrator.errors import NotFound, PayloadTooLarge, UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.checks import check_inputs, parse_json
from orchestrator.runtime.emit import emit
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.signal import signal
from orchestrator.worker import tasks


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
    assert (
        tasks.submit.refusal((), {"workflow": "w", "inputs": {"a": [1, {"b": None}]}, "idempotency_key": "k"}) is None
    )
    assert tasks.signal.refusal((), {"event": "e", "key": 3, "data": [1, 2]}) is None
