from __future__ import annotations

import pytest

from orchestrator.definition.expression import compile_template, parse_expression
from orchestrator.errors import EvaluationError, ExpressionError

CTX = {
    "inputs": {"order_id": "A1", "n": 4, "tags": ["x", "y"]},
    "steps": {
        "fetch": {"output": {"items": [{"sku": "apple"}, {"sku": "pear"}]}, "status": "succeeded"},
        "price": {"output": [120, 95, 0], "status": "succeeded"},
        "fetch-order": {"output": 7, "status": "succeeded"},
    },
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("inputs.n // 3", 1),
        ("inputs.n % 3", 1),
        ("inputs.n / 8", 0.5),
        ("'a' + 'b'", "ab"),
        ("inputs.tags[1]", "y"),
        ("inputs['order_id']", "A1"),
        ("steps.fetch.output.items[0].sku", "apple"),
        ("steps['fetch-order'].output", 7),
        ("len(steps.fetch.output.items)", 2),
        ("sum(steps.price.output)", 215),
        ("min(steps.price.output)", 0),
        ("max(1, 5, 3)", 5),
        ("any([false, true])", True),
        ("all([true, false])", False),
        ("sum(steps.price.output) > 0 and inputs.n >= 4", True),
        ("not (1 < 2 < 3)", False),
        ("'x' in inputs.tags", True),
        ("'z' not in inputs.tags", True),
        ("null == None", True),
        ("1 if inputs.n > 3 else 2", 1),
        ("{'a': [1, 2.5, true]}", {"a": [1, 2.5, True]}),
        ("-inputs.n", -4),
        ("steps.fetch.status == 'succeeded'", True),
    ],
)
def test_evaluates(source: str, expected: object) -> None:
    assert parse_expression(source).evaluate(CTX) == expected


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("__import__('os')", "only these functions"),
        ("inputs.__class__", None),
        ("open('/etc/passwd')", "only these functions"),
        ("2 ** 1000", "**"),
        ("lambda: 1", "lambda"),
        ("[x for x in inputs]", "comprehension"),
        ("inputs.n is None", "'is' is not allowed"),
        ("os.system", "unknown name 'os'"),
        ("steps", "steps.<id>.output"),
        ("steps[inputs.n]", "step id"),
        ("steps.fetch.outptu", "output and status"),
        ("1 +", "invalid expression"),
        ("f'{inputs}'", "f-string"),
        ("(" * 1000 + "1" + ")" * 1000, "nested more than"),
        ("+".join(["1"] * 1000), "nested more than"),
        ("", "empty expression"),
    ],
)
def test_rejects_at_parse_time(source: str, why: str | None) -> None:
    if why is None:
        # Attribute lookups are data lookups: a dunder name is just a missing key.
        with pytest.raises(EvaluationError, match="no key '__class__'"):
            parse_expression(source).evaluate(CTX)
        return
    with pytest.raises(ExpressionError, match=why.replace("*", r"\*").replace("(", r"\(")):
        parse_expression(source)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("inputs.missing", "no key 'missing'"),
        ("inputs.tags[5]", "out of range"),
        ("inputs.n + 'a'", "unsupported operand"),
        ("1 / 0", "division by zero"),
        ("'a' * 100000000", "too large"),
        ("item", "'item' is not defined here"),
        ("inputs.n.x", "cannot look up 'x' in a number"),
    ],
)
def test_runtime_errors_are_evaluation_errors(source: str, why: str) -> None:
    with pytest.raises(EvaluationError, match=why):
        parse_expression(source).evaluate(CTX)


def test_references_are_collected() -> None:
    expr = parse_expression("steps.a.output + steps['b-c'].output + inputs.x + item")
    assert expr.refs.steps == {"a", "b-c"}
    assert expr.refs.inputs == {"x"}
    assert expr.refs.uses_item


def test_a_whole_expression_string_keeps_the_native_type() -> None:
    template = compile_template("${{ steps.price.output }}")
    assert template.render(CTX) == [120, 95, 0]


def test_mixed_text_interpolates() -> None:
    template = compile_template("order ${{ inputs.order_id }} has ${{ len(inputs.tags) }} tags: ${{ inputs.tags }}")
    assert template.render(CTX) == 'order A1 has 2 tags: ["x","y"]'


def test_nested_data_renders_recursively_and_constants_stay_constant() -> None:
    template = compile_template({"a": ["${{ inputs.n }}", 1], "b": {"c": "plain"}})
    assert template.render(CTX) == {"a": [4, 1], "b": {"c": "plain"}}
    assert compile_template({"x": [1, "plain"]}).is_constant


def test_unclosed_template_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="unclosed"):
        compile_template("value ${{ inputs.n")


def test_a_template_is_checked_when_compiled_and_rendered_when_used() -> None:
    # Given: a bad expression deep inside a value, after good ones
    with pytest.raises(ExpressionError, match="unknown name 'nope'"):
        compile_template({"a": "${{ inputs.n }}", "b": [1, {"c": "x ${{ nope }}"}]})
    # When: a good template is compiled, its references are known before any render
    template = compile_template({"a": "${{ steps.s.output }}", "b": ["${{ steps.s.output }}", "${{ item }}"]})
    assert template.refs.steps == {"s"} and template.refs.uses_item and not template.is_constant
    assert [e.source for e in template.expressions] == ["steps.s.output", "steps.s.output", "item"]
    # Then: it renders the same every time
    context = {"steps": {"s": {"output": 3}}, "item": "i"}
    assert template.render(context) == template.render(context) == {"a": 3, "b": [3, "i"]}
    constant = {"x": [1, "plain"]}
    assert compile_template(constant).render({}) is constant
