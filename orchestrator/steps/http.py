"""The built-in HTTP step: the standard external call, meant to run behind a circuit breaker.

    call-api:
      task: orchestrator.steps.http:request
      with:
        url: https://payments.example/charge
        method: POST
        json: {amount: 10}
        headers: {Authorization: "Bearer ${{ secrets.PAYMENTS_TOKEN }}"}
      breaker: payments-api
      retry: {max_attempts: 5, retry_on: [ConnectionError, TimeoutError]}

What it refuses, with ``Refused`` (a ``ValueError`` that is never retried): a scheme other than
http and https, a link-local or cloud metadata address (``orchestrator.steps.guard``), more
redirects than ``max_redirects``, an answer larger than ``max_bytes`` (counted once decompressed, and
stopped while decompressing: ``Accept-Encoding: identity`` is sent unless the user set it), a
``max_bytes`` over ``MAX_BYTES_LIMIT``, a compression other than gzip and deflate. What a breaker or a retry
policy acts on: ``TimeoutError`` (``timeout`` bounds the whole request, body included),
``ConnectionError`` (cannot connect, or a 5xx answer: ``ServerError``). A 4xx answer raises
``ClientError`` (a ``ValueError``). Redirects are not followed unless ``follow_redirects``; a
redirect to another origin (scheme, host, port) carries none of the user's headers (not only
Authorization and Cookie: any may hold a secret), and one that would re-send the body (307, 308) is
refused. No message names a header's value, the URL's user or password, its query, nor a string of
the ``json`` or ``data`` sent (a server may echo them).
"""

from __future__ import annotations

import base64
import functools
import json as jsonlib
import ssl
import zlib
from collections.abc import Iterable
from typing import Any, NoReturn

import httpcore
import httpx

from orchestrator.steps.guard import AddressRefused, Deadline, GuardedBackend, Policy

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_BYTES_LIMIT = 100 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
MAX_REDIRECTS_LIMIT = 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_OWN_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}  # all a hop to another origin gets


class Refused(ValueError):
    """The HTTP step will not make this request: retrying it would be refused the same way."""

    retryable = False


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
    timeout: float = DEFAULT_TIMEOUT_S,
    follow_redirects: bool = False,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sensitive_headers: Iterable[str] = (),
) -> dict[str, Any]:
    """One HTTP call; returns ``{"status", "headers", "body"}`` (``body`` parsed when it is JSON).
    ``sensitive_headers`` is still accepted, from when only the headers it named (and the
    credentials) stayed with the first origin; now every header the user sets does."""
    if not 0 < timeout <= 24 * 3600:
        raise Refused(f"timeout must be between 0 and 1 day, not {timeout!r}")
    if not 0 <= max_redirects <= MAX_REDIRECTS_LIMIT:
        raise Refused(f"max_redirects must be between 0 and {MAX_REDIRECTS_LIMIT}")
    if not 0 <= max_bytes <= MAX_BYTES_LIMIT:
        raise Refused(f"max_bytes must be between 0 and {MAX_BYTES_LIMIT} ({MAX_BYTES_LIMIT // 2**20} MiB)")
    body = jsonlib.dumps(json).encode() if json is not None else (data.encode() if data is not None else None)
    sent = {**_OWN_HEADERS, **(headers or {})}
    if not any(k.lower() == "accept-encoding" for k in sent):
        sent["Accept-Encoding"] = "identity"  # a compressed answer is capped too, but this spares the work
    if json is not None and not any(k.lower() == "content-type" for k in sent):
        sent["Content-Type"] = "application/json"
    hidden = _hidden(url, headers or {}, [json, data])
    deadline = Deadline(timeout)
    with _client(deadline) as client:
        response = _send(client, method.upper(), _checked_url(url), sent, body, deadline)
        origin = _origin(response.url)
        hops = 0
        while follow_redirects and response.status_code in _REDIRECTS and "location" in response.headers:
            hops += 1
            if hops > max_redirects:
                raise Refused(f"more than {max_redirects} redirects from {shown(url)}")
            target = _checked_url(str(response.url.join(response.headers["location"])))
            method, body, sent = _redirected(response.status_code, method.upper(), body, sent)
            if _origin(target) != origin:
                if body is not None:
                    raise Refused(f"a {response.status_code} redirect to another origin would re-send the body")
                sent = dict(_OWN_HEADERS)
            response.close()
            response = _send(client, method, target, sent, body, deadline)
        return _answer(response, max_bytes, deadline, hidden)


def shown(url: str | httpx.URL) -> str:
    """The URL for messages: scheme, host, port and path; never its user, password or query."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return "<an invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _client(deadline: Deadline) -> httpx.Client:
    from orchestrator.settings import get_settings

    transport = httpx.HTTPTransport(verify=_tls(), trust_env=False, retries=0)
    # httpx takes no network backend; its pool does, and hands it to each connection it opens.
    transport._pool._network_backend = GuardedBackend(Policy(get_settings().http_allow), deadline)
    return httpx.Client(transport=transport, trust_env=False, follow_redirects=False)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs tens of milliseconds."""
    return httpx.create_ssl_context(trust_env=False)


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise Refused(f"not a URL: {shown(url)}") from None
    if parsed.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {parsed.scheme or 'no scheme'}://")
    if not parsed.host:
        raise Refused(f"the URL has no host: {shown(url)}")
    return parsed


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _redirected(
    status: int, method: str, body: bytes | None, headers: dict[str, str]
) -> tuple[str, bytes | None, dict[str, str]]:
    """What the next hop sends: 303 (and 301/302 after a POST) become a GET without a body."""
    if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
        dropped = {"content-type", "content-length"}
        return "GET", None, {k: v for k, v in headers.items() if k.lower() not in dropped}
    return method, body, headers


def _send(
    client: httpx.Client, method: str, url: httpx.URL, headers: dict[str, str], body: bytes | None, deadline: Deadline
) -> httpx.Response:
    """Send and read the status line and headers; the body is read by ``_answer``."""
    try:
        built = client.build_request(method, url, headers=headers, content=body, timeout=deadline.left())
        return client.send(built, stream=True)
    except AddressRefused as exc:
        raise Refused(str(exc)) from None
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpcore.TimeoutException) as exc:
        _raise_transport(exc, url, deadline)
    except httpx.TransportError as exc:
        raise ConnectionError(f"cannot reach {shown(url)}: {type(exc).__name__}: {_reason(exc, url)}") from None


def _answer(response: httpx.Response, max_bytes: int, deadline: Deadline, hidden: list[str]) -> dict[str, Any]:
    try:
        raw = _read_capped(response, max_bytes, deadline)
    finally:
        response.close()
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    status = response.status_code
    if status >= 400:
        raise (ServerError if status >= 500 else ClientError)(status, shown(response.url), _scrub(text, hidden))
    try:
        body: Any = jsonlib.loads(text) if text else None
    except ValueError:
        body = text
    return {"status": status, "headers": dict(response.headers), "body": body}


def _read_capped(response: httpx.Response, max_bytes: int, deadline: Deadline) -> bytes:
    """The body, streamed and stopped at ``max_bytes``. The cap is on the decompressed body (what
    would be stored), and decompression stops there too: a small compressed answer cannot grow
    past it in memory (httpx's own decoder inflates a whole chunk at once)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise Refused(f"the answer from {shown(response.url)} is {declared} bytes, over max_bytes ({max_bytes})")
    inflate = _Inflater(response.headers.get("content-encoding", ""), shown(response.url))
    chunks, size = [], 0
    try:
        for raw in response.iter_raw():
            chunk = inflate.feed(raw, max_bytes - size + 1)
            size += len(chunk)
            if size > max_bytes:
                raise Refused(f"the answer from {shown(response.url)} is over max_bytes ({max_bytes}): stopped")
            chunks.append(chunk)
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpcore.TimeoutException) as exc:
        _raise_transport(exc, response.url, deadline)
    except httpx.TransportError as exc:
        raise ConnectionError(f"reading the answer from {shown(response.url)} failed: {type(exc).__name__}") from None
    return b"".join(chunks)


class _Inflater:
    """A ``Content-Encoding`` undone a bounded piece at a time: gzip, deflate (zlib or raw), or none."""

    def __init__(self, encoding: str, url: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise Refused(f"the answer from {url} is compressed with {encoding!r}: only gzip and deflate are read")
        self.coding = codings[0] if codings else None
        self.url = url
        wbits = zlib.MAX_WBITS | 16 if self.coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, raw: bytes, room: int) -> bytes:
        """At most ``room`` bytes of what ``raw`` inflates to: more than that (input left over) is
        over the cap, so the caller never needs the rest."""
        if self.coding is None:
            return raw
        try:
            return self._zlib.decompress(raw, room)
        except zlib.error:
            if self.coding == "deflate" and not self._started:  # a raw deflate stream, without zlib's header
                self._zlib, self._started = zlib.decompressobj(-zlib.MAX_WBITS), True
                return self.feed(raw, room)
            raise ConnectionError(f"the answer from {self.url} is not valid {self.coding}") from None
        finally:
            self._started = True


def _raise_transport(exc: Exception, url: httpx.URL, deadline: Deadline) -> NoReturn:
    if isinstance(exc, httpx.TimeoutException | httpcore.TimeoutException):
        raise TimeoutError(f"no complete answer from {shown(url)} within {deadline.seconds:g}s") from None
    raise ConnectionError(f"{shown(url)} broke off the answer: {type(exc).__name__}") from None


def _hidden(url: str, headers: dict[str, str], sent: list[Any]) -> list[str]:
    """What an error's text must not show, since a server may echo what it got: every header value
    the user sent, the URL's password, the Basic credentials httpx makes of it, its query values,
    and every string in the ``json`` or ``data`` sent."""
    found = [v for v in headers.values() if len(v) >= 4]
    found += [v.split(" ", 1)[1] for v in headers.values() if " " in v and len(v.split(" ", 1)[1]) >= 4]
    found += [v for v in _strings(sent) if len(v) >= 4]
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return sorted(set(found), key=len, reverse=True)
    if parsed.password:
        found.append(parsed.password)
        found.append(base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode())
    found += [v for _, v in parsed.params.multi_items() if len(v) >= 4]
    return sorted(set(found), key=len, reverse=True)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "***")
    return text


def _reason(exc: Exception, url: httpx.URL) -> str:
    """A transport error's text, with the URL's user, password and query left out."""
    text = str(exc)
    for part in (url.userinfo.decode(errors="replace"), url.query.decode(errors="replace")):
        if part:
            text = text.replace(part, "***")
    return text[:200]
