"""The built-in HTTP step: the standard external call, meant to run behind a circuit breaker.

    call-api:
      task: tasks.http:request
      with: {url: "https://payments.example/charge", method: POST, json: {amount: 10}}
      breaker: payments-api
      retry: {max_attempts: 5, retry_on: [ConnectionError, TimeoutError]}

A 5xx answer raises ``ServerError`` (a ``ConnectionError``: worth retrying, and counted by the
breaker); a 4xx raises ``ClientError`` (a ``ValueError``: the request itself is wrong).
"""

from __future__ import annotations

import json as jsonlib
import urllib.error
import urllib.request
from typing import Any


class HTTPError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:200]}")
        self.status = status


class ServerError(HTTPError, ConnectionError):
    """A 5xx answer: the service is failing."""


class ClientError(HTTPError, ValueError):
    """A 4xx answer: the request is wrong, and retrying it will not help."""


def request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json: Any = None,
    data: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """One HTTP call; returns ``{"status", "headers", "body"}`` (``body`` parsed when it is JSON)."""
    body = jsonlib.dumps(json).encode() if json is not None else (data.encode() if data is not None else None)
    request_headers = {"Accept": "application/json", **(headers or {})}
    if json is not None:
        request_headers.setdefault("Content-Type", "application/json")
    prepared = urllib.request.Request(url, data=body, headers=request_headers, method=method.upper())
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            return _answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise (ServerError if exc.code >= 500 else ClientError)(exc.code, url, text) from None
    except TimeoutError:
        raise TimeoutError(f"no answer from {url} within {timeout:g}s") from None
    except urllib.error.URLError as exc:
        raise ConnectionError(f"cannot reach {url}: {exc.reason}") from None


def _answer(status: int, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    text = raw.decode(errors="replace")
    try:
        body: Any = jsonlib.loads(text) if text else None
    except ValueError:
        body = text
    return {"status": status, "headers": headers, "body": body}
