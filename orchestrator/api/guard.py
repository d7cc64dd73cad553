"""Cross-site and DNS-rebinding guards, as ASGI middleware, in front of every route.

- A write (POST, PUT, PATCH, DELETE) under ``/api/v1`` must declare ``Content-Type:
  application/json``, even with an empty body (else 415): a page elsewhere can then only send it
  after a CORS preflight, which this server never answers.
- A write whose ``Origin`` header is present and is not this server's own (``scheme://Host``) is
  refused (403).
- With no API token configured (the server then listens on loopback only) a ``Host`` that is not a
  loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, any port) is refused (403) on every route,
  the UI's included: a name rebound to 127.0.0.1 by a hostile DNS server reaches nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api.errors import send_error
from orchestrator.settings import LOOPBACK_HOSTS

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = LOOPBACK_HOSTS | {"localhost"}
DEFAULT_PORTS = {"http": "80", "https": "443"}


class Guard:
    """``is_open()`` is true when no API token is configured (read per request)."""

    def __init__(self, app: ASGIApp, prefix: str, is_open: Callable[[], bool]) -> None:
        self.app = app
        self.prefix = prefix
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            await send_error(send, *refused)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = _headers(scope)
        host = headers.get("host")
        if self.is_open() and (host is None or hostname(host) not in LOOPBACK_NAMES):
            return 403, (
                "with no ORCHESTRATOR_API_TOKENS configured only a loopback Host is served "
                "(127.0.0.1, localhost, [::1])"
            )
        path: str = scope.get("path", "")
        if scope.get("method", "GET").upper() not in WRITES:
            return None
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return None
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, scope.get("scheme", "http"), host):
            return 403, "a cross-origin write is refused (the Origin header is not this server's)"
        if media_type(headers.get("content-type", "")) != "application/json":
            return 415, "a write needs Content-Type: application/json (even with no body)"
        return None


def hostname(host: str) -> str:
    """``host`` without its port, lower-case; an IPv6 literal without its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        after = host[end + 1 :]
        return host[1:end] if end > 0 and (not after or after.startswith(":")) else ""
    name, _, _ = host.partition(":")
    return name


def _authority(scheme: str, host: str) -> str:
    """``host`` lower-case, without the scheme's default port."""
    host = host.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}"):
        host = host[: -len(default) - 1]
    return host


def same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) is this server's, reached as ``host``."""
    if host is None:
        return False
    given_scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or given_scheme != scheme.lower() or "/" in rest:
        return False
    return _authority(given_scheme, rest) == _authority(scheme.lower(), host)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of a repeated one)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found
