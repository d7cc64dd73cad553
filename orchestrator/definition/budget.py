"""The size budget of the values an expression builds.

Every operator that can grow a value (``+``, ``*``, ``%``, literals, interpolation, ``sum``) asks
here first, before Python allocates: a workflow file must never be able to make a worker build a
value larger than ``DEFAULT_MAX_EXPRESSION_RESULT`` characters of JSON (a 100 MB string kills
the worker, and a value that fits in memory can still explode when serialised if it shares one
large element many times). Numbers must stay something JSON holds: finite floats, integers of a
size ``json`` can print.

One evaluation (a whole render of a ``with``, say) also has a work budget,
``DEFAULT_MAX_EXPRESSION_WORK`` characters: every value built, and every operand compared, searched
or scanned, is charged its size. Each value may be within the limit and still a 4 KB expression
could build and compare a hundred 10 MB strings, seconds of CPU with the run's row locked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from orchestrator.errors import EvaluationError
from orchestrator.settings import DEFAULT_MAX_EXPRESSION_RESULT, DEFAULT_MAX_EXPRESSION_WORK

LIMIT = DEFAULT_MAX_EXPRESSION_RESULT
WORK = DEFAULT_MAX_EXPRESSION_WORK
MAX_INT_BITS = 14_000  # about 4,200 digits: below the 4,300 digits Python converts to text
_FLOAT_CHARS = 24
_FORMAT_CONVERSION_CHARS = 330  # the longest %f of a finite float (1e308 has 309 digits)
_SCALARS = frozenset({int, float, bool, type(None)})
_CHEAP = 1000  # characters: comparing strings this short is not charged


class _Evaluation:
    """What one evaluation has measured and spent. ``sizes``: containers already measured, by id
    (the object is kept so its id cannot be reused), so a value built from a shared part is measured
    in time proportional to its parts. ``spent``: the work charged so far."""

    __slots__ = ("sizes", "spent")

    def __init__(self) -> None:
        self.sizes: dict[int, tuple[Any, int]] = {}
        self.spent = 0


_CURRENT: ContextVar[_Evaluation | None] = ContextVar("expression_evaluation", default=None)


def too_large(size: int) -> EvaluationError:
    return EvaluationError(
        f"the result would be too large (about {size:,} characters of JSON; the limit is {LIMIT:,}): it was not built"
    )


def measured(fn: Callable[[Any], Any], argument: Any) -> Any:
    """``fn(argument)`` with a memo of measured sizes for its evaluation (the outermost call owns
    it). Plain set and reset, no context manager: this is on every render's path."""
    if _CURRENT.get() is not None:
        return fn(argument)
    token = _CURRENT.set(_Evaluation())
    try:
        return fn(argument)
    finally:
        _CURRENT.reset(token)


def spend(size: int) -> None:
    """Charge ``size`` characters of work to this evaluation, before the work is done."""
    evaluation = _CURRENT.get()
    if evaluation is None:
        return
    evaluation.spent += size
    if evaluation.spent > WORK:
        raise EvaluationError(
            f"the expressions do too much work (about {evaluation.spent:,} characters built or compared;"
            f" the limit is {WORK:,} for one evaluation): stopped"
        )


def size_of(value: Any, limit: int = LIMIT) -> int:
    """The JSON size of ``value`` (approximately, from above), or a number over ``limit`` as soon
    as it passes it. Walks the value without recursion; a shared part is counted each time."""
    evaluation = _CURRENT.get()
    memo = evaluation.sizes if evaluation is not None else None
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            total += len(item) + 2
        elif item is None or kind is bool:
            total += 5
        elif kind is int:
            total += item.bit_length() // 3 + 2
        elif kind is float:
            total += _FLOAT_CHARS
        elif isinstance(item, Mapping | list | tuple):
            known = memo.get(id(item)) if memo is not None else None
            if known is not None:
                total += known[1]
            elif isinstance(item, Mapping):
                total += 2 + 2 * len(item)
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                total += 2 + len(item)
                stack.extend(item)
        else:
            total += len(str(item)) + 2
        if total > limit:
            return total
    if memo is not None and isinstance(value, Mapping | list | tuple):
        memo[id(value)] = (value, total)
    return total


def check(value: Any) -> Any:
    """``value`` if it is within the budget; else EvaluationError. Measuring it is work."""
    size = size_of(value)
    if size > LIMIT:
        raise too_large(size)
    spend(size)
    return value


def compared(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A comparison charged the size of what it may have to walk: the smaller operand. Numbers
    and short strings cost nothing worth counting (and this is on every ``if``'s path)."""

    def run(a: Any, b: Any) -> Any:
        kind_a, kind_b = type(a), type(b)
        if kind_a is str and kind_b is str:
            if len(a) > _CHEAP and len(b) > _CHEAP:
                spend(min(len(a), len(b)))
        elif kind_a not in _SCALARS and kind_b not in _SCALARS:
            spend(min(size_of(a), size_of(b)))
        return op(a, b)

    return run


def searched(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``in``: charged the size of the string or container searched."""

    def run(a: Any, b: Any) -> Any:
        if type(b) not in _SCALARS and (type(b) is not str or len(b) > _CHEAP):
            spend(size_of(b))
        return op(a, b)

    return run


def scanned(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``min``, ``max``, ``any``, ``all``: charged the size of the list they go through."""

    def run(*args: Any) -> Any:
        for arg in args:
            if type(arg) not in _SCALARS:
                spend(size_of(arg))
        return fn(*args)

    return run


def number(value: Any) -> Any:
    """An arithmetic result must be a number JSON can hold."""
    if type(value) is float and not math.isfinite(value):
        raise EvaluationError(f"the result is {value}, which JSON cannot hold")
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise EvaluationError(f"the result is an integer of more than {MAX_INT_BITS:,} bits")
    return value


def add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > LIMIT:
            raise too_large(len(a) + len(b))
        spend(len(a) + len(b))
    elif isinstance(a, list) and isinstance(b, list):
        size = size_of(a) + size_of(b)
        if size > LIMIT:
            raise too_large(size)
        spend(size)
        return _remember(a + b, size)
    return number(a + b)


def multiply(a: Any, b: Any) -> Any:
    for seq, count in ((a, b), (b, a)):
        if isinstance(seq, str | list) and isinstance(count, int):
            each = len(seq) if isinstance(seq, str) else size_of(seq, LIMIT // max(count, 1) + 1)
            if count > 0 and each * count > LIMIT:
                raise too_large(each * count)
            spend(each * max(count, 0))
            return _remember(seq * count, each * max(count, 0))
    if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
        raise EvaluationError(f"the result is an integer of more than {MAX_INT_BITS:,} bits")
    return number(a * b)


_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def modulo(a: Any, b: Any) -> Any:
    """Numbers: the remainder. A string: ``%`` formatting, whose widths and precisions are
    read first, so ``'%0100000000d' % 0`` is refused before 100 MB is allocated."""
    if not isinstance(a, str):
        return number(a % b)
    each = size_of(b)  # any one conversion may print all of it (``%(key)s`` many times, say)
    bound = len(a)
    for width, precision, _ in _CONVERSION.findall(a):
        if width == "*" or precision == "*":
            raise EvaluationError("'*' widths are not allowed in a % format")
        bound += int(width or 0) + int(precision or 0) + _FORMAT_CONVERSION_CHARS + each
        if bound > LIMIT:
            raise too_large(bound)
    spend(bound)
    return a % b


def join(pieces: list[str]) -> str:
    """Interpolated text: the pieces' total length is checked before they are joined."""
    total = sum(map(len, pieces))
    if total > LIMIT:
        raise too_large(total)
    spend(total)
    return "".join(pieces)


def total(values: Any) -> Any:
    """``sum``: of numbers only (a sum of lists or strings would be a repetition in disguise)."""
    if not isinstance(values, list | tuple):
        raise EvaluationError(f"sum() takes a list of numbers, not {type(values).__name__}")
    result: Any = 0
    for value in values:
        if type(value) not in (int, float, bool):
            raise EvaluationError(f"sum() takes a list of numbers; it holds {type(value).__name__}")
        result = number(result + value)
    return result


def _remember(value: Any, size: int) -> Any:
    """A list the evaluator built: its size (from its parts') is known, for the operations after."""
    evaluation = _CURRENT.get()
    if evaluation is not None and isinstance(value, list):
        evaluation.sizes[id(value)] = (value, size)
    return value
