"""Hostile expressions: every operator that can grow a value is refused before it allocates, and
no number JSON cannot hold is ever produced. A refused value is an EvaluationError at once, and a
step whose ``with`` builds one fails on its first attempt (deterministic: never retried)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.definition.expression import compile_template, parse_expression
from orchestrator.errors import EvaluationError, ExpressionError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.views import run_view
from orchestrator.settings import DEFAULT_MAX_EXPRESSION_RESULT, DEFAULT_MAX_FOREACH_ITEMS, get_settings
from tests.unit.harness import Ledger, drive

PEAK_BYTES = 3 * DEFAULT_MAX_EXPRESSION_RESULT  # the operands within the budget, never the refused result


def _refused_cheaply(source: str, context: dict[str, Any], why: str) -> None:
    expression = parse_expression(source)
    tracemalloc.start()
    try:
        with pytest.raises(EvaluationError, match=why):
            expression.evaluate(context)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"{source} allocated {peak} bytes before it was refused"


@pytest.mark.parametrize(
    "source",
    [
        "'%0100000000d' % 0",  # a width
        "'%.100000000f' % 1.5",  # a precision
        "'%(a)s' * 11 % {'a': inputs.big}",  # the arguments, each conversion printing them all
        "['a' * 1000000] * 1000000",  # one shared element, many times: passes an element cap
        "[['x' * 1000] * 1000] * 1000",
        "inputs.big * 11",
        "11 * inputs.big",
        "inputs.big + inputs.big + inputs.big + inputs.big + inputs.big + inputs.big + inputs.big + inputs.big"
        " + inputs.big + inputs.big + inputs.big",
        "[inputs.big, inputs.big, inputs.big, inputs.big, inputs.big, inputs.big, inputs.big, inputs.big,"
        " inputs.big, inputs.big, inputs.big]",
        "{'a': inputs.big, 'b': inputs.big, 'c': inputs.big, 'd': inputs.big, 'e': inputs.big, 'f': inputs.big,"
        " 'g': inputs.big, 'h': inputs.big, 'i': inputs.big, 'j': inputs.big, 'k': inputs.big}",
        "inputs.list * 6",
        "inputs.list + inputs.list + inputs.list + inputs.list + inputs.list + inputs.list",
    ],
)
def test_a_value_over_the_budget_is_refused_before_it_is_built(source: str) -> None:
    big = "b" * (DEFAULT_MAX_EXPRESSION_RESULT // 10)
    context = {"inputs": {"big": big, "list": [big, big]}}
    _refused_cheaply(source, context, "too large|too much work")  # a chain of + passes the work budget first


def test_a_star_width_is_refused() -> None:
    with pytest.raises(EvaluationError, match=r"'\*' widths"):
        parse_expression("'%*d' % [100000000, 1]").evaluate({})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'%05d|%.2f' % {'a': 1}", None),
        ("'%(a)05d|%(b).2f' % {'a': 1, 'b': 2.5}", "00001|2.50"),
        ("'order %s' % 'A1'", "order A1"),
        ("'%d items' % 3", "3 items"),
        ("7 % 3", 1),
        ("'ab' * 3", "ababab"),
        ("[1, 2] * 2", [1, 2, 1, 2]),
        ("[1] + [2]", [1, 2]),
        ("'a' * -1", ""),
        ("sum([1, 2.5, true])", 4.5),
    ],
)
def test_ordinary_values_are_untouched(source: str, expected: Any) -> None:
    if expected is None:
        return  # a list is one argument to %, as in Python: not this test's concern
    assert parse_expression(source).evaluate({}) == expected


@pytest.mark.parametrize(
    "source",
    ["1e308 * 10", "-1e308 - 1e308", "1e308 + 1e308", "sum([1e308, 1e308])", "inputs.huge / 0.5", "1e308 // 1e-308"],
)
def test_no_infinity_or_nan_is_ever_produced(source: str) -> None:
    with pytest.raises(EvaluationError, match="JSON cannot hold"):
        parse_expression(source).evaluate({"inputs": {"huge": 1e308}})


@pytest.mark.parametrize("source", ["1e999", "-1e999", "[1, 1e400]"])
def test_an_infinite_literal_is_refused_at_parse_time(source: str) -> None:
    with pytest.raises(ExpressionError, match="too large for JSON"):
        parse_expression(source)


def test_an_integer_too_long_to_print_is_refused_before_it_is_multiplied() -> None:
    big = 10**4000
    with pytest.raises(EvaluationError, match="bits"):
        parse_expression("inputs.n * inputs.n").evaluate({"inputs": {"n": big}})


@pytest.mark.parametrize("source", ["sum(['a', 'b'])", "sum([[1], [2]])", "sum('ab')"])
def test_sum_adds_numbers_only(source: str) -> None:
    with pytest.raises(EvaluationError, match="sum"):
        parse_expression(source).evaluate({})


def test_interpolated_text_over_the_budget_is_refused_before_it_is_joined() -> None:
    big = "b" * (DEFAULT_MAX_EXPRESSION_RESULT // 10)
    template = compile_template("${{ inputs.big }}-" * 11)
    with pytest.raises(EvaluationError, match="too large"):
        template.render({"inputs": {"big": big}})


def test_a_template_that_shares_one_value_many_times_is_measured_whole() -> None:
    # Given a `with` whose every key names the same large input: each is only a reference in
    # memory, but serialising the whole would write it eleven times.
    big = "b" * (DEFAULT_MAX_EXPRESSION_RESULT // 10)
    template = compile_template({f"k{i}": "${{ inputs.big }}" for i in range(11)})
    with pytest.raises(EvaluationError, match="too large"):
        template.render({"inputs": {"big": big}})
    assert compile_template({"k": "${{ inputs.big }}"}).render({"inputs": {"big": big}}) == {"k": big}


HOSTILE = """
name: hostile
defaults: {retry: {max_attempts: 5, delay: 1s}}
steps:
  first:
    task: tests.unit:first
  boom:
    needs: [first]
    task: tests.unit:boom
    with: {pad: "${{ '%0100000000d' % 0 }}"}
"""


def test_a_step_whose_with_is_too_large_fails_at_once_naming_the_step(engine: Engine, ledger: Ledger) -> None:
    # Given a step with five attempts whose `with` would build a 100 MB string
    plan = build_plan(load_text(HOSTILE).workflow, check_tasks=False)
    run_id = operations.submit(engine, plan, {}, None, operations.Who("t")).run_id
    tracemalloc.start()
    try:
        drive(engine)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    view = run_view(engine.repo, run_id)
    # Then it fails on its first evaluation with no attempt made, and nothing large was built
    assert view["status"] == "failed"
    assert view["steps"]["boom"]["status"] == "failed"
    assert view["steps"]["boom"]["attempts"] == 0
    assert "too large" in view["steps"]["boom"]["error"]
    assert "boom" in view["error"]
    assert ledger.calls == ["tests.unit:first"]
    assert peak < 50 * 1024 * 1024


TEN_MB = "'a'*9999990"


@pytest.mark.parametrize(
    "source",
    [
        # a 3.9 KB expression: each string is within the size limit, 280 of them took 2.4 s to build and compare
        "[" + ", ".join([f"{TEN_MB} == {TEN_MB}"] * 140) + "]",
        "[" + ", ".join(["inputs.big == inputs.twin"] * 5) + "]",  # data the run holds, compared, nothing built
        "[" + ", ".join(["'x' in inputs.big"] * 5) + "]",
        "[" + ", ".join(["max(inputs.many)"] * 5) + "]",
    ],
)
def test_an_evaluation_that_does_too_much_work_is_stopped(source: str) -> None:
    big = "b" * (DEFAULT_MAX_EXPRESSION_RESULT - 10)
    context = {"inputs": {"big": big, "twin": "".join(big), "many": list(range(2_000_000))}}
    _refused_cheaply(source, context, "too much work .*the limit is 40,000,000 for one evaluation")


def test_one_render_has_one_work_budget() -> None:
    # Given a `with` of three entries, each within the work budget alone
    each = f"${{{{ [{TEN_MB} == {TEN_MB}] }}}}"
    assert compile_template({"a": each}).render({}) == {"a": [True]}
    # Then together they pass it
    with pytest.raises(EvaluationError, match="too much work"):
        compile_template({"a": each, "b": each, "c": each}).render({})


def test_large_data_passed_through_a_with_is_within_the_work_budget() -> None:
    big = ["b" * 1000] * (DEFAULT_MAX_EXPRESSION_RESULT // 1010)
    template = compile_template({"all": "${{ steps.a.output }}", "n": "${{ len(steps.a.output) }}", "k": "${{ 1 }}"})
    assert template.render({"steps": {"a": {"output": big}}}) == {"all": big, "n": len(big), "k": 1}


FOREACH = """
name: fan
steps:
  many:
    foreach: ${{ [0] * inputs.n }}
    task: tests.unit:work
    with: {i: "${{ index }}"}
"""


@pytest.fixture
def three_items(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCHESTRATOR_MAX_FOREACH_ITEMS", "3")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("ORCHESTRATOR_MAX_FOREACH_ITEMS")
    get_settings.cache_clear()


def test_a_foreach_past_the_item_limit_fails_the_step_with_nothing_expanded(
    engine: Engine, ledger: Ledger, three_items: None
) -> None:
    plan = build_plan(load_text(FOREACH).workflow, check_tasks=False)
    ok = operations.submit(engine, plan, {"n": 3}, None, operations.Who("t")).run_id
    over = operations.submit(engine, plan, {"n": 4}, None, operations.Who("t")).run_id
    drive(engine)
    assert run_view(engine.repo, ok)["status"] == "succeeded"
    step = run_view(engine.repo, over)["steps"]["many"]
    assert step["status"] == "failed"
    assert (
        step["error"]
        == "EvaluationError: foreach gave 4 items; ORCHESTRATOR_MAX_FOREACH_ITEMS allows 3 (split the list)"
    )
    assert ledger.calls == ["tests.unit:work"] * 3


def test_the_default_item_limit_allows_the_bench_s_100_000_item_foreach() -> None:
    assert DEFAULT_MAX_FOREACH_ITEMS >= 100_000
