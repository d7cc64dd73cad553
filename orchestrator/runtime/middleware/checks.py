"""Checks at a task's boundary: ``input_schema`` on the rendered ``with``, the function's own
annotations on its arguments and return value, ``output_schema`` and ``assert`` on its output.

A failed check fails the attempt with ``ValidationError``, which is never retried: the same
inputs or the same code would fail the same way. A cached output is checked like a fresh one,
so a stricter definition never reuses a value it would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

from orchestrator.errors import EvaluationError, StateStoreError, ValidationError
from orchestrator.runtime import typed
from orchestrator.runtime.middleware import Call, Defer, Middleware
from orchestrator.settings import DEFAULT_CACHE_UNAVAILABLE_WAIT_S
from orchestrator.store import now


class ChecksMiddleware(Middleware):
    options: ClassVar[frozenset[str]] = frozenset({"input_schema", "output_schema", "assert"})

    def around_call(self, call: Call, call_next: Callable[[], Any]) -> Any:
        step = call.step.step
        if step.input_schema is not None:
            typed.check(step.input_schema, call.row.inputs or {}, "input_schema")
        signature = typed.signature_of(call.function) if call.function is not None and ":" in call.step.task else None
        if signature is not None:
            call.inputs = signature.inputs(call.inputs)
        if call.step.asserts:
            self._read_context(call)  # before the call: a store that cannot be read costs no call
        result = call_next()
        try:
            return self._checked_output(call, signature, result)
        except ValidationError:
            if call.cached is None:
                raise
        # A cached value these checks refuse (the definition grew stricter): a miss, not a failure.
        call.cached, call.refresh_cache = None, True
        return self._checked_output(call, signature, call_next())

    def _checked_output(self, call: Call, signature: typed.Signature | None, result: Any) -> Any:
        step = call.step.step
        output = typed.to_data(result) if signature is None else signature.output(result)
        if step.output_schema is not None:
            output = typed.check(step.output_schema, output, "output_schema")
        for rule, template in zip(step.assert_, call.step.asserts, strict=True):
            try:
                held = template.render({**call.context(), "output": output})
            except EvaluationError as exc:
                raise ValidationError(f"assert {rule} could not be evaluated: {exc.message}") from None
            if not held:
                raise ValidationError(f"assert {rule} failed (output: {typed.excerpt(output)})")
        return output

    def _read_context(self, call: Call) -> None:
        try:
            call.context()
        except StateStoreError as exc:
            retry_at = now() + timedelta(seconds=DEFAULT_CACHE_UNAVAILABLE_WAIT_S)
            raise Defer(f"the step's context cannot be read ({exc.message}); no call was made", retry_at) from None
