"""The base of every orchestrator task: a message that is not one it can run is refused before it
runs, with one log line naming the reason, and acknowledged; the worker goes on serving.

Celery already refuses what is not JSON and tasks it does not know. What reaches a task can still
be wrong: arguments missing or unexpected, of the wrong type (a step id that is not an integer),
a body larger than ``ORCHESTRATOR_MAX_PAYLOAD`` or nested too deep. Calling the function with
them would raise a ``TypeError`` deep inside, logged with its traceback for every message.
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from functools import cached_property
from typing import Any

from celery import Task
from celery.worker.consumer import Consumer

from orchestrator.errors import BadMessage, DefinitionError, InputsError, NotFound, UsageError, shown
from orchestrator.runtime.checks import check_shape
from orchestrator.settings import DEFAULT_MESSAGE_ENVELOPE_BYTES, DEFAULT_MESSAGE_ESCAPE_FACTOR, get_settings

log = logging.getLogger(__name__)

# An ``int`` argument is an id or a count the store keeps in a BIGINT column: one past it would be a
# DataError (PostgreSQL) or an OverflowError (SQLite) with a traceback, after the message was taken.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class GuardedTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """Checks each message's arguments against the task function's signature and annotations
    first. ``throws``: a sender's mistakes (bad usage or input, a name not found, an invalid
    definition) are expected outcomes, logged as one line; anything else, a state store that is
    down included, keeps Celery's ERROR line and traceback."""

    throws = (UsageError, NotFound, InputsError, DefinitionError)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reason = self.refusal(args, kwargs)
        if reason is not None:
            raise BadMessage(f"refused: {reason}")
        return super().__call__(*args, **kwargs)

    def refusal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Why the message cannot be run, in one short line; None when it can."""
        try:  # the body was JSON already: its depth and size are what is left to check
            check_shape([args, kwargs], "the message body", get_settings().max_payload_bytes)
        except UsageError as exc:
            return exc.message
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            return shown(str(exc), 200)
        for name, value in bound.arguments.items():
            hint = self._hints.get(name)
            if hint is not None and not fits(value, hint):
                return f"{name} must be {_describe(hint)}, not {shown(repr(value), 60)}"
        return None

    @cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.run)

    @cached_property
    def _hints(self) -> dict[str, Any]:
        run = getattr(self.run, "__func__", self.run)
        return typing.get_type_hints(run)


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (decoded JSON) is of the simple type ``hint`` names: ``int``, ``str``,
    ``dict[...]``, ``list[...]``, ``X | None``, ``Any``. An ``int`` must fit in signed 64 bits."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and _INT_MIN <= value <= _INT_MAX
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    kind = origin or hint
    return isinstance(kind, type) and isinstance(value, kind)


def _describe(hint: Any) -> str:
    names = {
        int: "an integer of at most 64 bits",
        str: "a string",
        dict: "an object",
        list: "a list",
        type(None): "null",
    }
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    return names.get(typing.get_origin(hint) or hint, str(hint))


def raw_body_limit() -> int:
    """The longest raw body worth decoding: ``ORCHESTRATOR_MAX_PAYLOAD`` as JSON may escape it
    (``\\u0000`` is six bytes for one character) plus the envelope. The task guard measures the
    decoded arguments against the limit itself; this only keeps a huge body from being decoded."""
    return DEFAULT_MESSAGE_ESCAPE_FACTOR * get_settings().max_payload_bytes + DEFAULT_MESSAGE_ENVELOPE_BYTES


class GuardedConsumer(Consumer):  # type: ignore[misc]  # Celery's Consumer is untyped
    """The worker's consumer, with one line for a body that cannot be decoded (Celery logs it as
    CRITICAL, with a traceback and the start of the body) or that is too long to decode (JSON
    decoding a few hundred megabytes could take the worker's memory); the message is acknowledged,
    as Celery does, so it is not delivered again."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        limit = raw_body_limit()

        def on_task_received(message: Any) -> Any:
            size = len(message.body or b"")
            if size > limit:
                return self.on_oversized(message, size, limit)
            return handle(message)

        return on_task_received

    def on_oversized(self, message: Any, size: int, limit: int) -> None:
        headers = message.headers or {}
        log.error(
            "refused message %s (task %s): its body is %d bytes, over the %d bytes worth decoding"
            " (ORCHESTRATOR_MAX_PAYLOAD); it was not decoded",
            shown(str(headers.get("id", "?")), 60),
            shown(str(headers.get("task", "?")), 60),
            size,
            limit,
        )
        message.ack()

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        headers = message.headers or {}
        cause = exc.__cause__ or exc.__context__ or exc
        why = "nested too deep" if isinstance(cause, RecursionError) else f"{type(cause).__name__}: {cause}"
        log.error(
            "refused message %s (task %s): its body cannot be decoded (%s, %d bytes)",
            shown(str(headers.get("id", "?")), 60),
            shown(str(headers.get("task", "?")), 60),
            shown(why, 120),
            len(message.body or b""),
        )
        message.ack()
