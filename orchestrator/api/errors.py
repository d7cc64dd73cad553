"""Errors as the API answers them: ``{"error": "<one line>"}`` with the status the spec's table
gives each branch of the orchestrator's error tree; never a stack trace (a 500 is logged here)."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from starlette.exceptions import HTTPException
from starlette.types import Send

from orchestrator.errors import (
    BrokerError,
    CircuitOpenError,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
    Refused,
    StateStoreError,
    StoreRefused,
)
from orchestrator.settings import get_settings
from orchestrator.urls import redact_url, scrub

log = logging.getLogger(__name__)

# First match wins: a subclass is listed before its root.
STATUSES: tuple[tuple[type[OrchestratorError], int], ...] = (
    (NotFound, 404),
    (Refused, 409),
    (PayloadTooLarge, 413),
    (StoreRefused, 400),
    (StateStoreError, 503),
    (BrokerError, 503),
    (CircuitOpenError, 503),
)
DEFAULT_STATUS = 400  # the rest of the tree: usage, inputs, definitions, dead letters


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def status_of(exc: OrchestratorError) -> int:
    return next((code for kind, code in STATUSES if isinstance(exc, kind)), DEFAULT_STATUS)


def validation_message(errors: list[Any]) -> str:
    """The first problem as one line, ``<field>: <what is wrong>``; a body that is not JSON says so."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error")
        return f"malformed JSON body: {why}" if why else "malformed JSON body"
    loc = [str(part) for part in first.get("loc", ())]
    field = ".".join(loc[1:]) or (loc[0] if loc else "request")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {first.get('msg', 'invalid')}".replace("\n", " ") + more


async def _orchestrator(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestratorError)
    message = exc.api_message
    return error(status_of(exc), message.splitlines()[0] if message else type(exc).__name__)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error(400, validation_message(list(exc.errors())))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def _broker(_: Request, exc: Exception) -> JSONResponse:
    """Redis (the broker, and the breakers' shared state) refused a connection: 503, naming the
    configured URL without its password."""
    url = get_settings().broker_url or "the embedded broker"
    return error(503, f"cannot reach the broker at {redact_url(url)}: {scrub(str(exc).splitlines()[0], url)}")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(OrchestratorError, _orchestrator)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for unreachable in (redis.ConnectionError, redis.TimeoutError, KombuOperationalError):
        app.add_exception_handler(unreachable, _broker)
    app.add_exception_handler(Exception, _internal)


async def send_error(send: Send, status: int, message: str) -> None:
    """``{"error": message}`` with ``status``, sent straight to ASGI: for the middleware that
    answers before any route (the body limit, the cross-site guard)."""
    body = json.dumps({"error": message}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
