"""Step checks in-process on SQLite: input_schema, output_schema (JSON Schema or a pydantic model),
assert, and a function's own annotations; each violation a ValidationError, never retried, in
the error and the dead-letter entry with its rule, path and the bad value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_text, plan_file
from orchestrator.errors import InvalidDefinition, UsageError
from orchestrator.runtime import operations, repair
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import run_view
from orchestrator.store import Repository
from tests.unit import typed_steps
from tests.unit.harness import drive

RETRIES = "retry: {max_attempts: 3, delay: 1s, jitter: false}"


@pytest.fixture
def real(repo: Repository) -> Engine:
    """An engine that calls the real step functions of tests.unit.typed_steps."""
    typed_steps.CALLS.clear()
    return Engine.create(repo, Recorder(), timing=Timing(countdown_limit=0), renew_leases=False)


def run(engine: Engine, text: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    plan = build_plan(load_text(text).workflow)
    run_id = operations.submit(engine, plan, inputs or {}).run_id
    drive(engine)
    return run_view(engine.repo, run_id)


def dead_letter(engine: Engine, run_id: str) -> Any:
    with engine.repo.transaction() as tx:
        (entry,) = tx.dead_letters(run_id=run_id)
    return entry


def one_step(body: str) -> str:
    return f"name: checked\ndefaults:\n  {RETRIES}\nsteps:\n  s:\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "task: tests.unit.typed_steps:total\nwith: {order_id: A1}\n"
            "input_schema: {type: object, required: [order_id, amount]}",
            'ValidationError: input_schema at $: \'amount\' is a required property (got {"order_id": "A1"})',
        ),
        (
            "task: tests.unit.typed_steps:total\nwith: {order_id: A1, amount: -5}\n"
            "output_schema: {type: object, properties: {total: {type: number, minimum: 0}}}",
            "ValidationError: output_schema at $.total: -5 is less than the minimum of 0 (got -5)",
        ),
        (
            "task: tests.unit.typed_steps:total\nwith: {order_id: A1, amount: -5}\n"
            "output_schema: tests.unit.typed_steps:Invoice",
            "ValidationError: output_schema (tests.unit.typed_steps:Invoice) at $.total: Input should be greater "
            "than or equal to 0 (got -5)",
        ),
        (
            "task: tests.unit.typed_steps:total\nwith: {order_id: A1, amount: 0}\nassert: ['${{ output.total > 0 }}']",
            'ValidationError: assert ${{ output.total > 0 }} failed (output: {"order_id": "A1", "total": 0})',
        ),
        (
            "task: tests.unit.typed_steps:invoice\nwith: {order: {id: A1, quantity: 0}, price: 1}",
            "ValidationError: parameter 'order' (Order) at $.order.quantity: Input should be greater than or "
            "equal to 1 (got 0)",
        ),
        (
            "task: tests.unit.typed_steps:broken_invoice\nwith: {order_id: A1}",
            "ValidationError: return value (Invoice) at $.total: Input should be greater than or equal to 0 (got -1)",
        ),
    ],
    ids=["input_schema", "output_schema", "output_model", "assert", "annotated_parameter", "annotated_return"],
)
def test_each_check_fails_the_step_once_with_its_rule_path_and_value_in_the_dead_letter(
    real: Engine, body: str, error: str
) -> None:
    view = run(real, one_step(body))

    step = view["steps"]["s"]
    assert (view["status"], step["status"], step["error"]) == ("failed", "failed", error)
    assert step["attempts"] == 1  # three attempts allowed, and never retried
    entry = dead_letter(real, view["run_id"])
    assert (entry.error, entry.error_type, entry.attempts) == (error, "ValidationError", 1)


def test_an_annotated_function_receives_and_returns_models_stored_as_json(real: Engine) -> None:
    view = run(
        real,
        one_step(
            "task: tests.unit.typed_steps:invoice\nwith: {order: {id: B2, quantity: 3}, price: 2.5}\n"
            "output_schema: tests.unit.typed_steps:Invoice\n"
            "assert: ['${{ output.total == inputs.expected }}', '${{ output.order_id == \"B2\" }}']"
        ),
        {"expected": 7.5},
    )

    assert view["status"] == "succeeded", view["error"]
    assert view["steps"]["s"]["output"] == {"order_id": "B2", "total": 7.5}
    assert typed_steps.CALLS == ["invoice:B2"]  # the function asserts it got an Order model


def test_an_assert_reads_upstream_outputs_and_foreach_items(real: Engine) -> None:
    text = """
name: items
steps:
  base:
    task: tests.unit.typed_steps:total
    with: {order_id: base, amount: 10}
  each:
    needs: [base]
    foreach: [1, 2, 30]
    task: tests.unit.typed_steps:total
    with: {order_id: "o${{ index }}", amount: "${{ item }}"}
    assert: ["${{ output.total == item and output.total < steps.base.output.total }}"]
"""
    view = run(real, text)

    assert view["status"] == "failed"
    assert (
        view["error"] == "each[2]: ValidationError: assert ${{ output.total == item and output.total < "
        'steps.base.output.total }} failed (output: {"order_id": "o2", "total": 30})'
    )


def test_accept_checks_the_output_against_the_output_schema(real: Engine) -> None:
    body = (
        "task: tests.unit.typed_steps:broken_invoice\nwith: {order_id: A1}\n"
        "output_schema: tests.unit.typed_steps:Invoice"
    )
    view = run(real, one_step(body))
    assert view["status"] == "failed"

    with pytest.raises(UsageError, match=r"--output refused: output_schema .* at \$.total"):
        repair.accept(real, view["run_id"], "s", {"order_id": "A1", "total": -3}, Who("alice"))
    assert run_view(real.repo, view["run_id"])["steps"]["s"]["status"] == "failed"  # nothing changed

    real.send(repair.accept(real, view["run_id"], "s", {"order_id": "A1", "total": 3}, Who("alice")).dispatches)
    drive(real)
    assert run_view(real.repo, view["run_id"])["status"] == "succeeded"


def test_accept_warns_and_skips_the_check_of_a_model_this_process_may_not_import(
    real: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: a failed step whose output_schema names a model outside ORCHESTRATOR_TASK_MODULES here
    # (stored without the checks: the workers' list may have it)
    body = "task: tests.unit.typed_steps:total\nwith: {order_id: A1, amount: 5}\noutput_schema: shop.models:Invoice"
    plan = build_plan(load_text(one_step(body)).workflow, check_tasks=False)
    run_id = operations.submit(real, plan, {}).run_id
    drive(real)
    step = run_view(real.repo, run_id)["steps"]["s"]
    # The worker refuses to import it, once and for good
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert step["error"].startswith(
        "ModelNotAllowed: output_schema 'shop.models:Invoice' is refused: module 'shop.models'"
    )

    # When an operator accepts an output, it is taken unchecked, with a warning saying why
    real.send(repair.accept(real, run_id, "s", {"anything": 1}, Who("alice")).dispatches)
    drive(real)
    view = run_view(real.repo, run_id)
    assert (view["status"], view["steps"]["s"]["output"]) == ("succeeded", {"anything": 1})
    assert "--output not checked against shop.models:Invoice: output_schema 'shop.models:Invoice' is refused" in (
        caplog.text
    )


def test_validate_checks_schemas_models_and_assert_expressions(write: Callable[[str, str], Path]) -> None:
    path = write(
        """name: bad-checks
steps:
  a:
    task: tests.unit.typed_steps:total
    input_schema: {type: objekt}
    output_schema: tests.unit.typed_steps:NOT_A_MODEL
    assert: "output.total > 0"
  b:
    task: tests.unit.typed_steps:total
    output_schema: tests.unit.typed_steps:Missing
    assert: ["${{ steps.a.output }}"]
  c:
    task: tests.unit.typed_steps:total
    output_schema: tests.not_installed_anywhere:Model
""",
        "bad.yaml",
    )
    with pytest.raises(InvalidDefinition) as caught:
        plan_file(str(path))
    lines = [str(p) for p in caught.value.problems]
    assert lines == [
        f"{path}:5: step 'a': input_schema is not a valid JSON Schema: 'objekt' is not valid under any of the "
        "given schemas",
        f"{path}:6: step 'a': output_schema 'tests.unit.typed_steps:NOT_A_MODEL' is not a pydantic model (it is int)",
        f"{path}:7: step 'a': assert: 'output.total > 0' is not an expression: write it as ${{{{ ... }}}}",
        f"{path}:10: step 'b': output_schema 'tests.unit.typed_steps:Missing': module 'tests.unit.typed_steps' has "
        "no 'Missing'",
        f"{path}:11: step 'b': assert: steps.a is not upstream: add 'a' to needs",
        f"{path}:14: warning: step 'c': output_schema 'tests.not_installed_anywhere:Model' not checked: module "
        "'tests.not_installed_anywhere' is not importable here",
    ]


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("wait: {for: 1s}\n    cache: {ttl: 1m}", "cache applies only to a task step, not to a wait step"),
        ("approval: {}\n    assert: ['${{ output }}']", "assert applies only to a task step, not to a approval step"),
        ("task: m:f\n    output_schema: 'not a ref'", "output_schema"),
        ("task: m:f\n    cache: {ttl: 0s}", "cache.ttl"),
    ],
)
def test_checks_and_cache_in_the_wrong_place_are_refused(step: str, error: str) -> None:
    with pytest.raises(InvalidDefinition, match=error.replace("(", r"\(").replace("[", r"\[")):
        load_text(f"name: wrong\nsteps:\n  s:\n    {step}\n")


def test_annotations_pydantic_cannot_check_are_left_unchecked(real: Engine) -> None:
    view = run(real, one_step("task: tests.unit.typed_steps:with_client\nwith: {x: 2}"))

    assert (view["status"], view["steps"]["s"]["output"]) == ("succeeded", [2, 2])
    assert typed_steps.CALLS == ["with_client:2"]


def test_a_schema_whose_ref_cannot_resolve_is_refused_at_validate_and_never_fetched(
    real: Engine, write: Callable[[str, str], Path]
) -> None:
    remote = "{type: object, properties: {a: {$ref: 'https://example.invalid/a.json'}, b: {$ref: '#/$defs/b'}}}"
    path = write(
        f"name: refs\nsteps:\n  s:\n    task: tests.unit.typed_steps:total\n    input_schema: {remote}\n", "r.yaml"
    )
    with pytest.raises(InvalidDefinition) as caught:
        plan_file(str(path))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:5: step 's': input_schema: $ref '#/$defs/b' cannot be resolved (only references inside the "
        "schema are)",
        f"{path}:5: step 's': input_schema: $ref 'https://example.invalid/a.json' cannot be resolved (only references "
        "inside the schema are)",
    ]

    from orchestrator.runtime import typed

    with pytest.raises(Exception) as raised:
        typed.check({"properties": {"a": {"$ref": "https://example.invalid/a.json"}}}, {"a": 1}, "input_schema")
    assert type(raised.value).__name__ == "ValidationError"
    assert "the schema's $ref cannot be resolved" in str(raised.value)


def test_data_nested_deeper_than_python_can_check_is_a_validation_error() -> None:
    from orchestrator.errors import ValidationError
    from orchestrator.runtime import typed

    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ValidationError, match="nested too deeply"):
        typed.check({"type": "array", "items": {"$ref": "#"}}, nested, "input_schema")
