"""Fuzzing the three readers of hostile text: the workflow loader, the expression parser and
evaluator, and ``check_inputs``. For any input: no exception but the documented ones, no example
past a second, no allocation past a bound (tracemalloc's peak).

The default budget fits CI (a few seconds each); ``ORCHESTRATOR_FUZZ_EXAMPLES`` raises it.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from orchestrator.definition import WorkflowBuilder, load_bytes
from orchestrator.definition.expression import compile_template, parse_expression
from orchestrator.errors import DefinitionError, EvaluationError, ExpressionError, InputsError, UsageError
from orchestrator.runtime.checks import check_inputs
from orchestrator.settings import DEFAULT_MAX_EXPRESSION_RESULT

EXAMPLES = int(os.environ.get("ORCHESTRATOR_FUZZ_EXAMPLES", "150"))
SECONDS = 1.0
PEAK_BYTES = 3 * DEFAULT_MAX_EXPRESSION_RESULT + 16 * 1024 * 1024  # operands within the budget, and the parsers' own
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the alarm below bounds each example, hangs included
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # "explain" traces every line: too slow here
)


class Hung(Exception):
    pass


@contextmanager
def bounded() -> Iterator[None]:
    """The example must end within SECONDS (a real alarm: a hang is interrupted, not waited for)
    and allocate at most PEAK_BYTES at its peak."""

    def hung(*_: Any) -> None:
        raise Hung(f"still running after {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    tracemalloc.start()
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, SECONDS * 3)  # tracemalloc slows Python about threefold
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        tracemalloc.stop()
    assert peak <= PEAK_BYTES, f"peak allocation {peak} bytes"
    assert time.monotonic() - started < SECONDS * 3


def only(allowed: tuple[type[BaseException], ...], action: Callable[[], Any]) -> Any:
    with bounded():
        try:
            return action()
        except allowed:
            return None


# The loader: bytes from a YAML-ish alphabet (anchors, aliases, flow brackets, tags, keys it knows)
_YAML_TOKENS = [
    "name: w\n",
    "steps:\n",
    "  a:\n",
    "    task: m:f\n",
    "    with: ",
    "needs: [a]\n",
    "&x ",
    "*x ",
    "&y ",
    "*y ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "- ",
    "\n",
    "  ",
    "!!python/object:os.system ",
    "!!binary ",
    "'",
    '"',
    "#",
    "${{ inputs.x }}",
    "${{ ",
    " }}",
    "on: ",
    "yes",
    "1e999",
    "~",
    "<<: *x\n",
    "---\n",
    "...\n",
    "\t",
    "\x00",
    "\xff",
    "states:\n",
    "initial: a\n",
    "foreach: ",
    "retry: {max_attempts: 9999999999999999999999}\n",
    "timeout: 1d\n",
]


@st.composite
def yaml_texts(draw: st.DrawFn) -> bytes:
    tokens = draw(st.lists(st.sampled_from(_YAML_TOKENS), max_size=60))
    return "".join(tokens).encode("utf-8", "surrogateescape")


@FUZZ
@given(st.one_of(yaml_texts(), st.binary(max_size=400)), st.sampled_from(["yaml", "json"]))
def test_the_loader_raises_only_definition_errors(raw: bytes, fmt: str) -> None:
    only((DefinitionError,), lambda: load_bytes(raw, "fuzz.yaml", fmt))


def test_nested_aliases_and_merge_keys_stay_bounded() -> None:
    # The hand-written worst cases the fuzzer may take long to find: nested aliases and merge keys
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)
    ]
    merges = ["m0: &m0 {k: v}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: *m{i - 1}}}" for i in range(1, 30)]
    for text in ("\n".join(laughs), "\n".join(merges), "name: w\nsteps: " + "[" * 5000 + "]" * 5000):
        only((DefinitionError,), lambda text=text: load_bytes(text.encode(), "fuzz.yaml"))


# Expressions: generated from the grammar, hostile leaves included
_LEAVES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["1e308", "1e-308", "0", "-1", "0.1", "9" * 400, "True", "null", "None"]),
    st.sampled_from(["'%0100000000d'", "'%.99999999f'", "'%s%s'", "'%(a)s'", "'%*d'", "'%c'", "'x'", "''"]),
    st.text(alphabet="ab%s'\\\"{}", max_size=8).map(repr),
    st.sampled_from(["inputs.x", "inputs.big", "inputs.list", "inputs.d", "item", "index", "steps.a.output"]),
    st.sampled_from(["inputs.__class__", "inputs['__dict__']", "steps", "output", "run.id", "undefined"]),
)
_BINARY = ["+", "-", "*", "/", "//", "%", "**", "==", "<", "in", "not in", "and", "or", "is", "@", "&", "<<"]


def _compose(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(_BINARY), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "not ", "~", "+"]), children).map("".join),
        st.lists(children, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(children, max_size=3).map(lambda xs: "{" + ", ".join(f"'k{i}': x" for i, x in enumerate(xs)) + "}"),
        st.tuples(st.sampled_from(["len", "sum", "min", "max", "any", "all", "open", "eval"]), children).map(
            lambda t: f"{t[0]}({t[1]})"
        ),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, st.sampled_from(["x", "__class__", "output", "items"])).map(lambda t: f"{t[0]}.{t[1]}"),
    )


EXPRESSIONS = st.recursive(_LEAVES, _compose, max_leaves=24)
CONTEXT = {
    "inputs": {"x": 3, "big": "b" * 100_000, "list": ["b" * 10_000] * 10, "d": {"x": [1, 2.5, None]}},
    "steps": {"a": {"output": [1, 2, 3], "status": "succeeded"}},
    "item": "i",
    "index": 0,
}


@FUZZ
@given(st.one_of(EXPRESSIONS, st.text(max_size=60)))
def test_expressions_raise_only_expression_and_evaluation_errors(source: str) -> None:
    def parse_and_evaluate() -> None:
        try:
            expression = parse_expression(source)
        except ExpressionError:
            return
        expression.evaluate(CONTEXT)

    only((EvaluationError,), parse_and_evaluate)


@FUZZ
@given(st.lists(st.one_of(EXPRESSIONS.map(lambda e: "${{ " + e + " }}"), st.text(max_size=10)), max_size=6))
def test_templates_raise_only_expression_and_evaluation_errors(parts: list[str]) -> None:
    def render() -> None:
        try:
            template = compile_template({"text": "".join(parts), "each": parts})
        except ExpressionError:
            return
        template.render(CONTEXT)

    only((EvaluationError,), render)


# check_inputs: any Python value a client might pass, JSON or not
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\udcff", "\x00", b"bytes", frozenset({1, 2}), 2**63, -(2**64)]),
    st.builds(lambda: "a" * 2_000_000),
    st.builds(lambda: 10**5000),  # more digits than Python converts to text
    st.builds(object),
)
VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=6),
        children.map(lambda c: [c] * 20),  # one value shared many times, as YAML aliases build
    ),
    max_leaves=12,
)


def _workflow() -> Any:
    builder = WorkflowBuilder("w", inputs={"type": "object", "properties": {"x": {"type": "string", "maxLength": 5}}})
    builder.step("a", "m:f")
    return builder.build()


@FUZZ
@given(VALUES)
def test_check_inputs_raises_only_inputs_and_usage_errors(value: Any) -> None:
    workflow = _workflow()
    only((InputsError, UsageError), lambda: check_inputs(workflow, value))
    only((InputsError, UsageError), lambda: check_inputs(workflow, {"x": value}))


def test_check_inputs_refuses_deep_nesting_at_once() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    only((UsageError,), lambda: check_inputs(_workflow(), {"x": deep}))
