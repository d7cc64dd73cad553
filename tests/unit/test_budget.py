"""Hostile expressions: every operator that can grow a value is refused before it allocates, and
no number JSON cannot hold is ever produced. A refused value is an EvaluationError at once, and a
step whose ``with`` builds one fails on its first attempt (deterministic: never retried)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.definition.expression import compile_template, parse_expression
from orchestrator.errors import EvaluationError, ExpressionError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.views import run_view
from orchestrator.settings import DEFAULT_MAX_EXPRESSION_RESULT
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
    _refused_cheaply(source, context, "too large")


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
