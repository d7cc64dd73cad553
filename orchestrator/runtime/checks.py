"""Checks on data people and services send: run inputs against a workflow's schema, payloads
against the store's limits. Shared by every operation that accepts data."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from orchestrator.definition import Workflow
from orchestrator.errors import InputsError, InputsRefused, InputsTooLarge, PayloadTooLarge, UsageError
from orchestrator.settings import DEFAULT_MAX_PAYLOAD_DEPTH, get_settings
from orchestrator.store import storable


def check_inputs(workflow: Workflow, inputs: Any) -> None:
    """Inputs must be a JSON object that the workflow's inputs schema accepts (exit 2 if not).
    Every refusal is an InputsError, so the places that start runs on their own (a child run, an
    ``on:`` trigger, a schedule tick) end the step or skip the start with one catch; data too deep,
    too large or not UTF-8 stays a UsageError (or PayloadTooLarge) as well, for the doors that sort by those."""
    if not isinstance(inputs, dict):
        raise InputsError(f"inputs must be an object, not {type(inputs).__name__}")
    try:
        check_payload(inputs, "the inputs")
    except PayloadTooLarge as exc:
        raise InputsTooLarge(exc.message) from None
    except UsageError as exc:
        raise InputsRefused(exc.message) from None
    if workflow.inputs is None:
        return
    problem = schema_problem(workflow.inputs, inputs, "inputs")
    if problem is not None:
        raise InputsError(f"{problem} (workflow {workflow.name})")


def schema_problem(schema: dict[str, Any], data: Any, what: str) -> str | None:
    """The first thing ``schema`` refuses in ``data``, as one line naming its path; None if none."""
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    error = best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"{what}{'.' + where if where else ''}: {message}"


def check_payload(data: Any, what: str, limit: int | None = None) -> Any:
    """Data a person or service sends (inputs, signal data, decision data, an accepted output):
    JSON the store can hold, nested at most ``DEFAULT_MAX_PAYLOAD_DEPTH`` deep, no larger than
    ``ORCHESTRATOR_MAX_PAYLOAD``. Refused whole, before anything is stored (exit 2)."""
    limit = get_settings().max_payload_bytes if limit is None else limit
    check_shape(data, what, limit)
    try:
        size = len(json.dumps(data, allow_nan=False, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        raise UsageError(f"{what} holds text that is not valid UTF-8") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} is not JSON the state store can hold: {exc}") from None
    if size > limit:
        raise _too_large(what, size, limit)
    try:
        storable(data)
    except ValueError as exc:
        raise UsageError(f"{what} is not JSON the state store can hold: {exc}") from None
    return data


def _too_large(what: str, size: int, limit: int, about: str = "") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is {about}{size} bytes; the limit is {limit} bytes (ORCHESTRATOR_MAX_PAYLOAD); nothing was stored"
    )


def check_shape(data: Any, what: str, limit: int) -> None:
    """Depth and a size (close to JSON's), in one walk without recursion that stops as soon as
    either is over: so neither a 10,000-deep value nor a YAML alias graph that expands to gigabytes costs
    more than the limit to refuse (``json.dumps`` would recurse, or run for minutes)."""
    size = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > DEFAULT_MAX_PAYLOAD_DEPTH:
            raise UsageError(f"{what} is nested more than {DEFAULT_MAX_PAYLOAD_DEPTH} deep")
        if isinstance(value, dict):
            size += 2 + 2 * len(value)
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            size += 2 + len(value)
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            size += len(value) + 2
        else:
            size += 1
        if size > limit:
            raise _too_large(what, size, limit, "more than ")


def decode_text(raw: str | bytes, what: str) -> str:
    """Text from a file, standard input or the command line, which must be UTF-8 (on the command
    line Python hands other bytes over as lone surrogates: they are refused here too)."""
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{what} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} is not UTF-8 text (character {exc.start})") from None
    return raw


def parse_json(raw: str | bytes, what: str, limit: int | None = None) -> Any:
    """JSON a person or service sends, checked as ``check_payload`` checks data: UTF-8, no larger
    than ``ORCHESTRATOR_MAX_PAYLOAD`` (looked at before parsing), not nested too deep. Text that is
    not JSON raises ``json.JSONDecodeError`` (``-i`` reads such a value as a string)."""
    limit = get_settings().max_payload_bytes if limit is None else limit
    text = decode_text(raw, what)
    if len(text) > limit and len(text.encode()) > limit:
        raise _too_large(what, len(text.encode()), limit)
    try:
        data = json.loads(text)
    except RecursionError:
        raise UsageError(f"{what} is nested more than {DEFAULT_MAX_PAYLOAD_DEPTH} deep") from None
    return check_payload(data, what, limit)


def read_file(path: str, what: str, limit: int | None = None) -> str:
    """A file of data (``--inputs-file``, ``--data @FILE``): its size is looked at before it is read."""
    limit = get_settings().max_payload_bytes if limit is None else limit
    try:
        with open(path, "rb") as file:
            raw = file.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > limit:
        raise PayloadTooLarge(
            f"{what} {path} is larger than {limit} bytes (ORCHESTRATOR_MAX_PAYLOAD); nothing was stored"
        )
    return decode_text(raw, f"{what} {path}")
