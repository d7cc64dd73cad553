from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.definition import build_plan, load_file, load_text, plan_file
from orchestrator.errors import InvalidDefinition, Severity

Write = Callable[..., Path]
EXAMPLES = sorted(Path("config/examples").glob("*.yaml"))


def errors_of(text: str, **options: object) -> list[str]:
    loaded = load_text(text, "wf.yaml")
    with pytest.raises(InvalidDefinition) as info:
        build_plan(loaded.workflow, loaded.source, **options)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems if p.severity is Severity.ERROR]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_without_warnings(path: Path) -> None:
    plan = plan_file(str(path))
    assert plan.warnings == ()
    assert len(plan.order) == len(plan.workflow.nodes)


def test_a_cycle_is_printed_in_run_order() -> None:
    found = errors_of(
        "name: c\nsteps:\n  a: {task: tests.m:f, needs: [c]}\n  b: {task: tests.m:f, needs: [a]}\n"
        "  c: {task: tests.m:f, needs: [b]}\n  d: {task: tests.m:f, needs: [c]}\n  e: {task: tests.m:f}\n",
        check_tasks=False,
    )
    assert found == ["wf.yaml:3: step 'a': cycle: a -> b -> c -> a"]


def test_two_separate_cycles_are_both_reported() -> None:
    found = errors_of(
        "name: c\nsteps:\n  a: {task: tests.m:f, needs: [b]}\n  b: {task: tests.m:f, needs: [a]}\n"
        "  x: {task: tests.m:f, needs: [y]}\n  y: {task: tests.m:f, needs: [x]}\n",
        check_tasks=False,
    )
    assert len(found) == 2 and all("cycle:" in f for f in found)


def test_unknown_self_and_repeated_needs() -> None:
    found = errors_of(
        "name: n\nsteps:\n  fetch: {task: tests.m:f}\n  b: {task: tests.m:f, needs: [fetc, b, fetch, fetch]}\n",
        check_tasks=False,
    )
    assert found == [
        "wf.yaml:4: step 'b': needs unknown step 'fetc'; did you mean 'fetch'?",
        "wf.yaml:4: step 'b': needs itself",
        "wf.yaml:4: step 'b': needs 'fetch' twice",
    ]


def test_references_must_be_upstream_steps() -> None:
    found = errors_of(
        "name: r\nsteps:\n  a: {task: tests.m:f}\n  b: {task: tests.m:f}\n"
        "  c:\n    task: tests.m:f\n    needs: [a]\n"
        "    with: {x: '${{ steps.b.output }}', y: '${{ steps.zz.output }}'}\n"
        "  d:\n    task: tests.m:f\n    needs: [c]\n    if: '${{ steps.a.output > 0 }}'\n"
        "    with: {me: '${{ steps.d.output }}'}\n",
        check_tasks=False,
    )
    assert "wf.yaml:8: step 'c': with: steps.b is not upstream: add 'b' to needs" in found
    assert "wf.yaml:8: step 'c': with: steps.zz is not a step" in found
    assert "wf.yaml:13: step 'd': with: a step cannot read its own output" in found
    assert not any("step 'd': if" in f for f in found), "a transitive need is upstream"


def test_item_and_index_only_inside_foreach_with() -> None:
    found = errors_of(
        "name: i\nsteps:\n  a: {task: tests.m:f, with: {x: '${{ item }}'}}\n"
        "  b: {task: tests.m:f, foreach: [1, 2], if: '${{ index > 0 }}', with: {x: '${{ item }}'}}\n"
        "outputs: {o: '${{ item }}'}\n",
        check_tasks=False,
    )
    assert "wf.yaml:3: step 'a': with: item and index are only defined inside a foreach step" in found
    assert "wf.yaml:4: step 'b': if: item and index are only defined inside a foreach step's with" in found
    assert "wf.yaml:5: outputs: item and index are only defined inside a foreach step" in found
    assert len(found) == 3


def test_invalid_expression_names_step_and_key() -> None:
    found = errors_of("name: e\nsteps:\n  a:\n    task: tests.m:f\n    if: '${{ 1 + }}'\n", check_tasks=False)
    assert found == ["wf.yaml:5: step 'a': if: invalid expression ${{ 1 + }}: invalid syntax"]


def test_invalid_inputs_schema() -> None:
    found = errors_of("name: s\ninputs: {type: objectx}\nsteps:\n  a: {task: tests.m:f}\n", check_tasks=False)
    assert found[0].startswith("wf.yaml:2: inputs is not a valid JSON Schema at type:")


def test_undeclared_input_is_a_warning() -> None:
    loaded = load_text(
        "name: s\ninputs: {type: object, properties: {order_id: {type: string}}}\n"
        "steps:\n  a: {task: tests.m:f, with: {x: '${{ inputs.order }}'}}\n"
    )
    plan = build_plan(loaded.workflow, loaded.source, check_tasks=False)
    assert [p.message for p in plan.warnings] == [
        "inputs.order is not declared in the inputs schema; did you mean 'order_id'?"
    ]


def test_unknown_breaker_and_exception_names() -> None:
    found = errors_of(
        "name: b\nbreakers:\n  payments-api: {fail_max: 3, exclude: [ValueEror]}\n"
        "steps:\n  a:\n    task: tests.m:f\n    breaker: payment-api\n"
        "    retry: {retry_on: [ConectionError, builtins.ValueError, json.dumps]}\n",
        check_tasks=False,
    )
    assert "wf.yaml:3: unknown exception 'ValueEror'; did you mean 'ValueError'?" in found[0]
    assert any("unknown breaker 'payment-api'; did you mean 'payments-api'?" in f for f in found)
    assert any("unknown exception 'ConectionError'; did you mean 'ConnectionError'?" in f for f in found)
    assert any("'json.dumps' is not an exception class" in f for f in found)
    assert not any("builtins.ValueError" in f for f in found)


def test_breakers_known_from_config_are_accepted() -> None:
    loaded = load_text("name: b\nsteps:\n  a: {task: tests.m:f, breaker: shared}\n")
    plan = build_plan(loaded.workflow, loaded.source, known_breakers={"shared"}, check_tasks=False)
    assert plan.steps["a"].step.breaker == "shared"


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("{max_attempts: 0}", "greater than or equal to 1"),
        ("{delay: -1s}", "invalid duration '-1s'"),
        ("{delay: 5m, max_delay: 1m}", "max_delay (1m) is shorter than delay (5m)"),
        ("{backoff: linear}", "'fixed' or 'exponential'"),
        ("{retry_on: [ValueError], no_retry_on: [ValueError]}", "ValueError is in both"),
    ],
)
def test_nonsensical_retry_policies(retry: str, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_text(f"name: r\nsteps:\n  a: {{task: tests.m:f, retry: {retry}}}\n")


def test_retry_merges_over_defaults() -> None:
    loaded = load_text(
        "name: r\ndefaults: {retry: {max_attempts: 5, delay: 2s}, timeout: 1m}\n"
        "steps:\n  a: {task: tests.m:f, retry: {max_attempts: 2}}\n  b: {task: tests.m:f, timeout: 5s}\n"
    )
    plan = build_plan(loaded.workflow, check_tasks=False)
    assert (plan.steps["a"].retry.max_attempts, plan.steps["a"].retry.delay) == (2, 2.0)
    assert plan.steps["b"].retry.max_attempts == 5
    assert (plan.steps["a"].timeout, plan.steps["b"].timeout) == (60.0, 5.0)


def test_tasks_resolve_or_warn() -> None:
    loaded = load_text(
        "name: t\nsteps:\n  a: {task: orchestrator.examples:add}\n  b: {task: orchestrator.examples:nothing}\n"
        "  c: {task: tests.not_a_module_here:f}\n  d: {task: tests.unit.typed_steps:CALLS}\n"
        "  e: {task: celery.registered.name}\n",
        "wf.yaml",
    )
    with pytest.raises(InvalidDefinition) as info:
        build_plan(loaded.workflow, loaded.source)
    found = {(p.step, p.severity): p.message for p in info.value.problems}
    assert found == {
        ("b", Severity.ERROR): "task 'orchestrator.examples:nothing': module 'orchestrator.examples' has no 'nothing'",
        ("c", Severity.WARNING): "task 'tests.not_a_module_here:f' not checked: module 'tests.not_a_module_here' "
        "is not importable here",
        ("d", Severity.ERROR): "task 'tests.unit.typed_steps:CALLS' is not callable",
    }


def test_concurrency_without_foreach_is_an_error() -> None:
    with pytest.raises(InvalidDefinition, match="concurrency applies only to a foreach step"):
        load_text("name: c\nsteps:\n  a: {task: tests.m:f, concurrency: 3}\n")


def test_trigger_without_needs_is_a_warning(write: Write) -> None:
    loaded = load_file(write("name: t\nsteps:\n  a: {task: tests.m:f, trigger: all_done}\n"))
    plan = build_plan(loaded.workflow, loaded.source, check_tasks=False)
    assert [p.message for p in plan.warnings] == ["trigger all_done has no effect on a step without needs"]


def test_a_text_shared_by_steps_is_reported_on_each_step() -> None:
    # Given: template texts and a task compiled or resolved once per build, but used by two steps each
    found = errors_of(
        "name: s\nsteps:\n  a: {task: tests.m:f}\n"
        "  b: {task: tests.m:f, needs: [a], with: {x: '${{ steps.zz.output }}'}}\n"
        "  c: {task: tests.m:f, needs: [a], with: {x: '${{ steps.zz.output }}'}}\n"
        "  d: {task: tests.m:f, if: '${{ 1 + }}'}\n"
        "  e: {task: tests.m:f, if: '${{ 1 + }}'}\n"
        "  f: {task: 'orchestrator.examples:nothing'}\n"
        "  g: {task: 'orchestrator.examples:nothing'}\n"
    )
    # Then: each step gets its own line, as if nothing were shared
    assert found == [
        "wf.yaml:4: step 'b': with: steps.zz is not a step",
        "wf.yaml:5: step 'c': with: steps.zz is not a step",
        "wf.yaml:6: step 'd': if: invalid expression ${{ 1 + }}: invalid syntax",
        "wf.yaml:7: step 'e': if: invalid expression ${{ 1 + }}: invalid syntax",
        "wf.yaml:8: step 'f': task 'orchestrator.examples:nothing': module 'orchestrator.examples' has no 'nothing'",
        "wf.yaml:9: step 'g': task 'orchestrator.examples:nothing': module 'orchestrator.examples' has no 'nothing'",
    ]


def test_every_bad_expression_of_a_step_is_reported() -> None:
    found = errors_of(
        "name: b\nsteps:\n  a:\n    task: tests.m:f\n    if: '${{ 1 + }}'\n    foreach: '${{ nope }}'\n"
        "    with: {x: [1, {y: 'a ${{ steps.a.output'}]}\n",
        check_tasks=False,
    )
    assert found == [
        "wf.yaml:5: step 'a': if: invalid expression ${{ 1 + }}: invalid syntax",
        "wf.yaml:6: step 'a': foreach: invalid expression ${{ nope }}: unknown name 'nope' (known: event, index, "
        "inputs, item, output, run, schedule, secrets, steps)",
        "wf.yaml:7: step 'a': with: unclosed ${{ in 'a ${{ steps.a.output': close it with }}",
    ]
