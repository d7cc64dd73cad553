"""The ``${{ ... }}`` expression language: parsed once, checked statically, evaluated safely.

Python's own parser (``ast``) reads the text; nothing is ever handed to ``eval``. A whitelist of
node types is compiled into closures, so evaluation is plain data access: ``a.b`` and ``a['b']``
look up keys of JSON data and never touch a Python attribute.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from orchestrator.definition import budget
from orchestrator.errors import EvaluationError, ExpressionError
from orchestrator.settings import DEFAULT_MAX_EXPRESSION_CHARS, DEFAULT_MAX_EXPRESSION_DEPTH

Context = Mapping[str, Any]
Evaluator = Callable[[Context], Any]

ROOTS = frozenset({"inputs", "steps", "item", "index", "run", "event", "output", "schedule", "secrets"})
# Defined only in some places: checked by the plan.
PLACE_ROOTS = frozenset({"run", "event", "output", "schedule", "secrets"})
STEP_FIELDS = frozenset({"output", "status"})
SECRET_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # secrets.NAME: only ever a plain path (runtime.secrets)
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_SCALARS = (str, int, float, bool, type(None))


def _checked_min(*args: Any) -> Any:
    return min(*args)


def _checked_max(*args: Any) -> Any:
    return max(*args)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "sum": budget.total,
    "min": budget.scanned(_checked_min),
    "max": budget.scanned(_checked_max),
    "any": budget.scanned(any),
    "all": budget.scanned(all),
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {  # each checks its result's size first
    ast.Add: budget.add,
    ast.Sub: lambda a, b: budget.number(a - b),
    ast.Mult: budget.multiply,
    ast.Div: lambda a, b: budget.number(a / b),
    ast.FloorDiv: lambda a, b: budget.number(a // b),
    ast.Mod: budget.modulo,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: budget.compared(operator.eq),
    ast.NotEq: budget.compared(operator.ne),
    ast.Lt: budget.compared(operator.lt),
    ast.LtE: budget.compared(operator.le),
    ast.Gt: budget.compared(operator.gt),
    ast.GtE: budget.compared(operator.ge),
    ast.In: budget.searched(lambda a, b: a in b),
    ast.NotIn: budget.searched(lambda a, b: a not in b),
}


@dataclass(slots=True)
class References:
    """What an expression reads, for the static checks."""

    steps: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)
    uses_item: bool = False
    places: set[str] = field(default_factory=set)  # run, event, output: the roots only some places define

    def merge(self, other: References) -> None:
        self.steps |= other.steps
        self.inputs |= other.inputs
        self.uses_item = self.uses_item or other.uses_item
        self.places |= other.places


@dataclass(frozen=True, slots=True)
class Expression:
    """One parsed expression; ``evaluate`` runs it against a run's data."""

    source: str
    refs: References
    _fn: Evaluator
    builds: bool = True  # False for a plain data path: it looks values up and builds none

    def evaluate(self, context: Context) -> Any:
        try:
            return budget.measured(self._fn, context) if self.builds else self._fn(context)
        except EvaluationError as exc:
            raise EvaluationError(f"${{{{ {_clip(self.source, 200)} }}}}: {exc.message}") from None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as exc:
            raise EvaluationError(f"${{{{ {_clip(self.source, 200)} }}}}: {_clip(str(exc), 200)}") from None
        except MemoryError:  # a last resort: the budget is meant to refuse such a value before it is built
            raise EvaluationError(f"${{{{ {_clip(self.source, 200)} }}}}: out of memory") from None


def parse_expression(source: str) -> Expression:
    """Parse and check one expression (the text between ``${{`` and ``}}``)."""
    text = _checked_text(source)
    path = _parse_path(text)
    if path is not None:
        return path
    _check_bracket_depth(text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression ${{{{ {text} }}}}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"invalid expression ${{{{ {_clip(text)} }}}}") from None
    refs = References()
    fn = _compile(tree.body, refs, 0, text)
    return Expression(text, refs, fn)


def _checked_text(source: str) -> str:
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression ${{ }}")
    if len(text) > DEFAULT_MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is {len(text)} characters long; the limit is {DEFAULT_MAX_EXPRESSION_CHARS}")
    return text


_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[(?:-?\d+|'[^'\\]*'|\"[^\"\\]*\")\])*")
_SEGMENT = re.compile(r"\.([A-Za-z_]\w*)|\[(-?\d+)\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")


def _parse_path(text: str) -> Expression | None:
    """The fast path for plain data paths such as ``steps.fetch.output.items[0]``.

    Same semantics as the general route; anything it does not fully accept (other roots,
    operators, a malformed ``steps`` path) returns None and goes through ``ast`` for its
    precise error message.
    """
    found = _path(text)
    if found is None:
        return None
    root, path = found
    refs = References()
    _add_path_refs(root, path, refs)

    def walk(ctx: Context) -> Any:
        try:
            value = ctx[root]
        except KeyError:
            raise EvaluationError(f"'{root}' is not defined here") from None
        for key in path:
            value = _get(value, key)
        return value

    return Expression(text, refs, walk, builds=False)


def _path(text: str) -> tuple[str, tuple[str | int, ...]] | None:
    """A plain data path's root and keys, or None when it is not one."""
    keys: list[str | int]
    if "[" not in text:
        parts = text.split(".")
        if not all(map(str.isidentifier, parts)):
            return None
        root = parts[0]
        keys = list(parts[1:])
    else:
        if not _PATH.fullmatch(text):
            return None
        root_end = text.index("[") if "." not in text else min(text.index("["), text.index("."))
        root = text[:root_end]
        keys = []
        for match in _SEGMENT.finditer(text, root_end):
            name, number, single, double = match.groups()
            keys.append(int(number) if number is not None else (name or single or double or ""))
    if root not in ROOTS:
        return None
    if root == "steps" and (not keys or not isinstance(keys[0], str) or (len(keys) > 1 and keys[1] not in STEP_FIELDS)):
        return None
    if root == "secrets" and (len(keys) != 1 or not SECRET_NAME.fullmatch(str(keys[0]))):
        return None
    return root, tuple(keys)


def _add_path_refs(root: str, keys: tuple[str | int, ...], refs: References) -> None:
    if root == "steps":
        refs.steps.add(str(keys[0]))
    elif root == "inputs":
        if keys and isinstance(keys[0], str):
            refs.inputs.add(keys[0])
    elif root in PLACE_ROOTS:
        refs.places.add(root)
    else:
        refs.uses_item = True


def _check_bracket_depth(text: str) -> None:
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
            if depth > DEFAULT_MAX_EXPRESSION_DEPTH:
                raise ExpressionError(
                    f"expression nested more than {DEFAULT_MAX_EXPRESSION_DEPTH} deep: ${{{{ {_clip(text)} }}}}"
                )
        elif char in ")]}":
            depth -= 1


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _fail(node: ast.AST, source: str, why: str) -> ExpressionError:
    return ExpressionError(f"invalid expression ${{{{ {_clip(source)} }}}}: {why}")


def _compile(node: ast.AST, refs: References, depth: int, source: str) -> Evaluator:
    if depth > DEFAULT_MAX_EXPRESSION_DEPTH:
        raise _fail(node, source, f"nested more than {DEFAULT_MAX_EXPRESSION_DEPTH} deep")
    compiler = _COMPILERS.get(type(node))
    if compiler is None:
        raise _fail(node, source, f"{_describe(node)} is not allowed")
    return compiler(node, refs, depth + 1, source)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Lambda: "lambda",
        ast.Pow: "**",
        ast.ListComp: "a comprehension",
        ast.GeneratorExp: "a generator",
        ast.NamedExpr: ":=",
        ast.JoinedStr: "an f-string",
    }
    return names.get(type(node), type(node).__name__)


def _constant(node: ast.Constant, refs: References, depth: int, source: str) -> Evaluator:
    value = node.value
    if not isinstance(value, _SCALARS):
        raise _fail(node, source, f"the literal {value!r} is not allowed")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(node, source, "the number is too large for JSON")
    return lambda ctx: value


def _name(node: ast.Name, refs: References, depth: int, source: str) -> Evaluator:
    name = node.id
    if name in _CONSTANTS:
        constant = _CONSTANTS[name]
        return lambda ctx: constant
    if name == "steps":
        raise _fail(node, source, "write steps.<id>.output (or steps['<id>'].output)")
    if name == "secrets":
        raise _fail(node, source, "a secret is read whole, as ${{ secrets.NAME }} (NAME: capitals, digits and _)")
    if name not in ROOTS:
        known = ", ".join(sorted(ROOTS))
        raise _fail(node, source, f"unknown name '{name}' (known: {known})")
    if name in ("item", "index"):
        refs.uses_item = True
    if name in PLACE_ROOTS:
        refs.places.add(name)

    def lookup(ctx: Context) -> Any:
        try:
            return ctx[name]
        except KeyError:
            raise EvaluationError(f"'{name}' is not defined here") from None

    return lookup


def _static_key(node: ast.AST) -> str | int | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
    return None


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _lookup(node: ast.Attribute | ast.Subscript, refs: References, depth: int, source: str) -> Evaluator:
    base_node = node.value
    key = _static_key(node)
    if _is_name(base_node, "steps"):
        if not isinstance(key, str):
            raise _fail(node, source, "steps must be followed by a step id, e.g. steps.fetch.output")
        refs.steps.add(key)
        step_id = key
        return lambda ctx: _get(ctx["steps"], step_id)
    if isinstance(base_node, ast.Attribute | ast.Subscript) and _is_name(base_node.value, "steps"):
        if key not in STEP_FIELDS:
            raise _fail(node, source, f"a step has {' and '.join(sorted(STEP_FIELDS))}, not {key!r}")
    if _is_name(base_node, "inputs") and isinstance(key, str):
        refs.inputs.add(key)
    base = _compile(base_node, refs, depth, source)
    if key is not None:
        static = key
        return lambda ctx: _get(base(ctx), static)
    assert isinstance(node, ast.Subscript)
    if isinstance(node.slice, ast.Slice):
        raise _fail(node, source, "slices are not allowed")
    dynamic = _compile(node.slice, refs, depth, source)
    return lambda ctx: _get(base(ctx), dynamic(ctx))


def _get(obj: Any, key: Any) -> Any:
    """Data lookup only: keys of mappings and positions of sequences."""
    if isinstance(obj, Mapping):
        if not isinstance(key, str):
            raise EvaluationError(f"keys are strings, not {key!r}")
        if key not in obj:
            raise EvaluationError(f"no key {key!r}")
        return obj[key]
    if isinstance(obj, list | tuple | str) and isinstance(key, int) and not isinstance(key, bool):
        try:
            return obj[key]
        except IndexError:
            raise EvaluationError(f"index {key} is out of range (length {len(obj)})") from None
    raise EvaluationError(f"cannot look up {key!r} in {_type_name(obj)}")


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def _binop(node: ast.BinOp, refs: References, depth: int, source: str) -> Evaluator:
    op = _BINARY.get(type(node.op))
    if op is None:
        raise _fail(node, source, f"operator {_describe(node.op)} is not allowed")
    left = _compile(node.left, refs, depth, source)
    right = _compile(node.right, refs, depth, source)
    return lambda ctx: op(left(ctx), right(ctx))


def _unary(node: ast.UnaryOp, refs: References, depth: int, source: str) -> Evaluator:
    operand = _compile(node.operand, refs, depth, source)
    if isinstance(node.op, ast.Not):
        return lambda ctx: not operand(ctx)
    if isinstance(node.op, ast.USub):
        return lambda ctx: -operand(ctx)
    if isinstance(node.op, ast.UAdd):
        return lambda ctx: +operand(ctx)
    raise _fail(node, source, "operator ~ is not allowed")


def _boolop(node: ast.BoolOp, refs: References, depth: int, source: str) -> Evaluator:
    parts = [_compile(v, refs, depth, source) for v in node.values]
    if isinstance(node.op, ast.And):

        def all_of(ctx: Context) -> Any:
            result: Any = True
            for part in parts:
                result = part(ctx)
                if not result:
                    return result
            return result

        return all_of

    def any_of(ctx: Context) -> Any:
        result: Any = False
        for part in parts:
            result = part(ctx)
            if result:
                return result
        return result

    return any_of


def _compare(node: ast.Compare, refs: References, depth: int, source: str) -> Evaluator:
    first = _compile(node.left, refs, depth, source)
    ops = [_COMPARE[type(op)] for op in node.ops if type(op) in _COMPARE]
    if len(ops) != len(node.ops):
        raise _fail(node, source, "'is' is not allowed: use == and !=")
    rest = [_compile(c, refs, depth, source) for c in node.comparators]

    def compare(ctx: Context) -> bool:
        left = first(ctx)
        for op, right_fn in zip(ops, rest, strict=True):
            right = right_fn(ctx)
            if not op(left, right):
                return False
            left = right
        return True

    return compare


def _call(node: ast.Call, refs: References, depth: int, source: str) -> Evaluator:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        known = ", ".join(FUNCTIONS)
        raise _fail(node, source, f"only these functions may be called: {known}")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise _fail(node, source, f"{node.func.id}() takes plain arguments")
    fn = FUNCTIONS[node.func.id]
    args = [_compile(a, refs, depth, source) for a in node.args]
    return lambda ctx: fn(*(a(ctx) for a in args))


def _ifexp(node: ast.IfExp, refs: References, depth: int, source: str) -> Evaluator:
    test = _compile(node.test, refs, depth, source)
    body = _compile(node.body, refs, depth, source)
    orelse = _compile(node.orelse, refs, depth, source)
    return lambda ctx: body(ctx) if test(ctx) else orelse(ctx)


def _sequence(node: ast.List | ast.Tuple, refs: References, depth: int, source: str) -> Evaluator:
    items = [_compile(e, refs, depth, source) for e in node.elts]
    return lambda ctx: budget.check([i(ctx) for i in items])


def _mapping(node: ast.Dict, refs: References, depth: int, source: str) -> Evaluator:
    if any(k is None for k in node.keys):
        raise _fail(node, source, "** is not allowed in an object")
    keys = [_compile(k, refs, depth, source) for k in node.keys if k is not None]
    values = [_compile(v, refs, depth, source) for v in node.values]
    return lambda ctx: budget.check({k(ctx): v(ctx) for k, v in zip(keys, values, strict=True)})


_COMPILERS: dict[type[ast.AST], Callable[..., Evaluator]] = {
    ast.Constant: _constant,
    ast.Name: _name,
    ast.Attribute: _lookup,
    ast.Subscript: _lookup,
    ast.BinOp: _binop,
    ast.UnaryOp: _unary,
    ast.BoolOp: _boolop,
    ast.Compare: _compare,
    ast.Call: _call,
    ast.IfExp: _ifexp,
    ast.List: _sequence,
    ast.Tuple: _sequence,
    ast.Dict: _mapping,
}


class Template:
    """A value from a workflow file (any JSON data) with its ``${{ }}`` expressions checked and
    their references known. The renderer is built on the first render: compiling a workflow
    pays for the checks only, and a step that never runs never builds one."""

    __slots__ = ("refs", "is_constant", "_value", "_render")

    def __init__(self, value: Any, refs: References, is_constant: bool) -> None:
        self.refs = refs
        self.is_constant = is_constant
        self._value = value
        self._render: Evaluator | None = None

    def render(self, context: Context) -> Any:
        """The value with its expressions evaluated; EvaluationError if one fails or the whole
        would be larger than the budget (a value shared many times counts each time)."""
        render = self._render
        if render is None:
            render = self._render = _checked_renderer(self._value)
        return render(context)

    @property
    def expressions(self) -> tuple[Expression, ...]:
        found: list[Expression] = []
        _compile_value(self._value, References(), found)
        return tuple(found)


def compile_template(value: Any) -> Template:
    """Check every ``${{ }}`` in ``value`` (strings, lists and objects, recursively); the error
    of the first bad one is raised, as compiling it would."""
    refs = References()
    return Template(value, refs, not _scan_value(value, refs))


def _checked_renderer(value: Any) -> Evaluator:
    """The renderer, and the budget's check of what it renders. A lone data path (``${{
    steps.fetch.output }}``) gives back data the run already holds, building nothing: unchecked."""
    render = _compile_value(value, References(), [])
    if render is None:
        return lambda ctx: value
    if isinstance(value, str) and value.startswith("${{") and value.endswith("}}"):
        lone = _compile_text(value)[1]
        if len(lone) == 1 and not lone[0].builds and value.find("}}") == len(value) - 2:
            return render
    checked = render
    return lambda ctx: budget.measured(lambda c: budget.check(checked(c)), ctx)  # checked with the memo


def _scan_value(value: Any, refs: References) -> bool:
    """Whether ``value`` holds an expression; each is checked and its references added to
    ``refs``, in the order ``_compile_value`` visits them."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if kind is str or isinstance(value, str):
        if "${{" not in value:
            return False
        _scan_text(value, refs)
        return True
    if kind is dict or isinstance(value, Mapping):
        found = False
        for item in value.values():
            if type(item) is str:  # the usual ``with`` entry, without a call per value
                if "${{" in item:
                    _scan_text(item, refs)
                    found = True
            elif type(item) not in _PLAIN:
                found = _scan_value(item, refs) or found
        return found
    if isinstance(value, list | tuple):
        found = False
        for item in value:
            found = _scan_value(item, refs) or found
        return found
    return False


def _scan_text(text: str, refs: References) -> None:
    """Check one template string and add what it reads to ``refs``. A lone plain path is read
    without building its evaluator; anything else is compiled (once per distinct text)."""
    if text.startswith("${{") and text.endswith("}}") and text.find("}}") == len(text) - 2:
        path = _path(_checked_text(text[3:-2]))
        if path is not None:
            _add_path_refs(*path, refs)
            return
    for expression in _compile_text(text)[1]:
        refs.merge(expression.refs)


def _compile_value(value: Any, refs: References, found: list[Expression]) -> Evaluator | None:
    """A renderer for ``value``, or None when it holds no expression (it renders as itself)."""
    kind = type(value)
    if kind in _PLAIN:
        return None
    if kind is str or isinstance(value, str):
        return _compile_string(value, refs, found)
    if kind is dict or isinstance(value, Mapping):
        return _compile_mapping(value, refs, found)
    if isinstance(value, list | tuple):
        elements = [(_compile_value(v, refs, found), v) for v in value]
        if all(p is None for p, _ in elements):
            return None
        return lambda ctx: [(p(ctx) if p else v) for p, v in elements]
    return None


_PLAIN = frozenset({int, float, bool, type(None)})  # never hold an expression: no isinstance chain


def _compile_mapping(value: Mapping[Any, Any], refs: References, found: list[Expression]) -> Evaluator | None:
    items = [(k, _compile_value(v, refs, found), v) for k, v in value.items()]
    if all(p is None for _, p, _ in items):
        return None
    return lambda ctx: {k: (p(ctx) if p else v) for k, p, v in items}


def _compile_string(text: str, refs: References, found: list[Expression]) -> Evaluator | None:
    if "${{" not in text:
        return None
    render, expressions = _compile_text(text)
    for expression in expressions:
        refs.merge(expression.refs)
    found.extend(expressions)
    return render


@lru_cache(maxsize=4096)
def _compile_text(text: str) -> tuple[Evaluator, tuple[Expression, ...]]:
    """One template string's renderer and expressions, compiled once per distinct text (a failure
    is not cached: it raises again, and the plan names the step each time)."""
    if text.startswith("${{") and text.endswith("}}") and text.find("}}") == len(text) - 2:
        lone = parse_expression(text[3:-2])
        return lone.evaluate, (lone,)
    pieces = _split_template(text)
    expressions = tuple(p for p in pieces if isinstance(p, Expression))

    def render(ctx: Context) -> str:
        return budget.join([p if isinstance(p, str) else _as_text(p.evaluate(ctx)) for p in pieces])

    return render, expressions


def _split_template(text: str) -> list[str | Expression]:
    """Literal text and parsed expressions, in order (a lone expression is parsed before)."""
    pieces: list[str | Expression] = []
    cursor = 0
    while True:
        start = text.find("${{", cursor)
        if start < 0:
            break
        end = text.find("}}", start + 3)
        if end < 0:
            raise ExpressionError(f"unclosed ${{{{ in {_clip(text)!r}: close it with }}}}")
        if start > cursor:
            pieces.append(text[cursor:start])
        pieces.append(_parse_cached(text[start + 3 : end]))
        cursor = end + 2
    if cursor < len(text):
        pieces.append(text[cursor:])
    return pieces


@lru_cache(maxsize=4096)
def _parse_cached(source: str) -> Expression:
    return parse_expression(source)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
