"""The built-in HTTP step against local HTTP servers (threaded http.server in the test)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.settings import get_settings
from orchestrator.steps import guard, http
from orchestrator.steps.http import ClientError, Refused, ServerError, request

TOKEN = "tok-Very-Secret-123"


class Server:
    """One origin: answers by path, and keeps the headers of every request it got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                server.seen.append({k.lower(): v for k, v in self.headers.items()})
                path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
                getattr(server, "answer_" + path.strip("/").replace("-", "_"))(self, query)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    def answer_json(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 200, b'{"ok": true}', Content_Type="application/json")

    def answer_echo(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 200, json.dumps({"method": h.command}).encode())

    def answer_redirect(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, int(q.get("status", ["302"])[0]), b"", Location=q["to"][0])

    def answer_loop(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 302, b"", Location="/loop")

    def answer_big(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        if "chunked" in q:  # no Content-Length: the cap must stop the stream itself
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            chunk = b"x" * 65536
            for _ in range(64):
                h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
            return
        self.send(h, 200, b"x" * 2_000_000)

    def answer_drip(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):  # each byte well within any read timeout; the whole far over the total
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    def answer_down(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 503, b"down for maintenance")

    def answer_echo_auth(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 500, f"refused {h.headers.get('Authorization')} for {h.path}".encode())

    def answer_missing(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        self.send(h, 404, b"no such thing")


@pytest.fixture
def one() -> Iterator[Server]:
    server = Server()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def other() -> Iterator[Server]:
    server = Server()
    yield server
    server.httpd.shutdown()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_json_answer_is_parsed(one: Server) -> None:
    answer = request(f"{one.url}/json")
    assert (answer["status"], answer["body"]) == (200, {"ok": True})


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "/relative", "nonsense"])
def test_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(Refused) as caught:
        request(url)
    assert not getattr(caught.value, "retryable", True)


def test_redirects_are_off_by_default(one: Server, other: Server) -> None:
    answer = request(f"{one.url}/redirect?to={other.url}/json")
    assert answer["status"] == 302 and other.seen == []


def test_a_redirect_to_another_origin_carries_no_credentials(one: Server, other: Server) -> None:
    # Given credentials in the headers, one of them marked sensitive by the user
    headers = {"Authorization": f"Bearer {TOKEN}", "Cookie": "sid=1", "X-Api-Key": TOKEN, "X-Trace": "t1"}
    headers["Proxy-Authorization"] = "Basic abc"
    # When the first origin redirects to another one
    url = f"{one.url}/redirect?to={other.url}/json"
    answer = request(url, headers=headers, follow_redirects=True, sensitive_headers=["x-api-key"])
    # Then the second origin got none of them, and the harmless header still went along
    assert answer["body"] == {"ok": True}
    assert one.seen[0]["authorization"] == f"Bearer {TOKEN}"
    got = other.seen[0]
    assert {"authorization", "cookie", "x-api-key", "proxy-authorization"}.isdisjoint(got) and got["x-trace"] == "t1"


def test_a_redirect_within_the_origin_keeps_them(one: Server) -> None:
    request(f"{one.url}/redirect?to=/json", headers={"Authorization": "Bearer x"}, follow_redirects=True)
    assert [s.get("authorization") for s in one.seen] == ["Bearer x", "Bearer x"]


def test_a_303_after_a_post_becomes_a_get(one: Server) -> None:
    answer = request(f"{one.url}/redirect?status=303&to=/echo", method="POST", json={"a": 1}, follow_redirects=True)
    assert answer["body"] == {"method": "GET"}


def test_redirects_are_bounded(one: Server) -> None:
    with pytest.raises(Refused, match="more than 3 redirects"):
        request(f"{one.url}/loop", follow_redirects=True, max_redirects=3)
    assert len(one.seen) == 4


def test_a_redirect_to_a_file_url_is_refused(one: Server) -> None:
    with pytest.raises(Refused, match="only http and https"):
        request(f"{one.url}/redirect?to=file:///etc/passwd", follow_redirects=True)


@pytest.mark.parametrize("query", ["", "?chunked=1"])
def test_an_answer_over_the_cap_is_refused_while_streaming(one: Server, query: str) -> None:
    with pytest.raises(Refused, match=r"over max_bytes \(100000\)"):
        request(f"{one.url}/big{query}", max_bytes=100_000)


def test_the_timeout_covers_the_whole_body(one: Server) -> None:
    # Given a server that sends a byte every 0.1 s (no read ever waits long) for 10 s
    started = time.monotonic()
    # When the step's timeout is 1 s, then it fails with a TimeoutError about then
    with pytest.raises(TimeoutError, match="within 1s"):
        request(f"{one.url}/drip", timeout=1)
    assert time.monotonic() - started < 2


def test_errors_a_policy_can_act_on_stay_distinct(one: Server) -> None:
    with pytest.raises(ServerError) as server:
        request(f"{one.url}/down")
    assert isinstance(server.value, ConnectionError) and server.value.status == 503
    with pytest.raises(ClientError):
        request(f"{one.url}/missing")
    with pytest.raises(ConnectionError) as unreachable:
        request("http://127.0.0.1:1/x")
    assert not isinstance(unreachable.value, Refused)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="ORCHESTRATOR_HTTP_ALLOW"):
        request(url, timeout=2)


def _resolving_to(monkeypatch: pytest.MonkeyPatch, address: str) -> list[str]:
    """Make every name resolve to ``address``; returns the names that were resolved."""
    asked: list[str] = []

    def fake(host: str, port: int, timeout: float) -> list[guard.IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(address)]

    monkeypatch.setattr(guard, "resolve", fake)
    return asked


def test_the_resolved_address_is_checked_not_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, "169.254.169.254")
    with pytest.raises(Refused, match="resolves to 169.254.169.254"):
        request("http://innocent.example/", timeout=2)


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch, one: Server) -> None:
    # Given a name only our resolver knows (a second lookup by anyone else would fail)
    asked = _resolving_to(monkeypatch, "127.0.0.1")
    port = one.url.rsplit(":", 1)[1]
    # When the step calls it, it reaches the checked address, having resolved the name once
    answer = request(f"http://pinned.invalid:{port}/json")
    assert answer["body"] == {"ok": True} and asked == ["pinned.invalid"]
    assert one.seen[0]["host"] == f"pinned.invalid:{port}"


def test_the_allow_list_lets_a_listed_network_through(monkeypatch: pytest.MonkeyPatch, one: Server) -> None:
    _resolving_to(monkeypatch, "169.254.1.1")
    monkeypatch.setattr(guard.httpcore.SyncBackend, "connect_tcp", _to_local(one))
    with pytest.raises(Refused):
        request("http://link.local.test/json")
    monkeypatch.setenv("ORCHESTRATOR_HTTP_ALLOW", "10.0.0.0/8, 169.254.1.0/24")
    get_settings.cache_clear()
    assert request("http://link.local.test/json")["body"] == {"ok": True}


def _to_local(server: Server) -> Any:
    real = guard.httpcore.SyncBackend.connect_tcp
    port = int(server.url.rsplit(":", 1)[1])

    def connect(self: Any, host: str, _port: int, *args: Any, **kwargs: Any) -> Any:
        assert host == "169.254.1.1"
        return real(self, "127.0.0.1", port, *args, **kwargs)

    return connect


def test_no_message_names_a_header_value_or_the_urls_secrets(one: Server) -> None:
    secret_url = f"http://user:{TOKEN}@127.0.0.1:1/path?api_key={TOKEN}"
    echoed = f"{one.url}/echo-auth?api_key={TOKEN}"
    for url, error in (
        (secret_url, ConnectionError),
        (f"{one.url}/down?api_key={TOKEN}", ServerError),
        (echoed, ServerError),
    ):
        with pytest.raises(error) as caught:
            request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert TOKEN not in str(caught.value)
    assert http.shown(secret_url) == "http://127.0.0.1:1/path"


def test_a_hop_started_past_the_deadline_is_a_timeout() -> None:
    import httpx

    deadline = guard.Deadline(0.01)
    time.sleep(0.02)
    with http._client(deadline) as client, pytest.raises(TimeoutError, match=r"within 0.01s"):
        http._send(client, "GET", httpx.URL("http://127.0.0.1:1/"), {}, None, deadline)
