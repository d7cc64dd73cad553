"""Checks on data people and services send: run inputs against a workflow's schema, payloads
against the store's limits. Shared by every operation that accepts data."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from orchestrator.definition import Workflow
from orchestrator.errors import InputsError, PayloadTooLarge, UsageError
from orchestrator.settings import get_settings
from orchestrator.store import storable


def check_inputs(workflow: Workflow, inputs: Any) -> None:
    """Inputs must be a JSON object that the workflow's inputs schema accepts (exit 2 if not)."""
    if not isinstance(inputs, dict):
        raise InputsError(f"inputs must be an object, not {type(inputs).__name__}")
    try:
        storable(inputs)
    except ValueError as exc:
        raise InputsError(f"inputs are not JSON the state store can hold: {exc}") from None
    check_payload(inputs, "the inputs")
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
    """Data a person or service sends (signal data, decision data, an accepted output): JSON the
    store can hold, no larger than ``ORCHESTRATOR_MAX_PAYLOAD``. Refused whole: nothing is stored."""
    limit = get_settings().max_payload_bytes if limit is None else limit
    try:
        size = len(json.dumps(data, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} is not JSON the state store can hold: {exc}") from None
    if size > limit:
        raise PayloadTooLarge(
            f"{what} is {size} bytes; the limit is {limit} bytes (ORCHESTRATOR_MAX_PAYLOAD); nothing was stored"
        )
    try:
        storable(data)
    except ValueError as exc:
        raise UsageError(f"{what} is not JSON the state store can hold: {exc}") from None
    return data
