"""The built-in HTTP step against local HTTP servers (threaded http.server in the test)."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
import tracemalloc
import zlib
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

    def answer_packed(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        """Compressed whatever the request asked for, as a hostile server does."""
        coding, size = q.get("coding", ["gzip"])[0], int(q.get("size", ["1000"])[0])
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
        block = b"\0" * min(size, 2**20)  # packed a block at a time: the server's memory stays small too
        body = b"".join(packer.compress(block[: min(len(block), size - at)]) for at in range(0, size, len(block)))
        body += packer.flush()
        self.send(h, 200, body, Content_Encoding=coding)

    def answer_echo_body(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        """An error page quoting the request body where a 200-character excerpt cuts it."""
        sent = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.send(h, 500, b"x" * 190 + b" got " + sent + f" as {h.headers.get('Authorization')}".encode())

    def answer_echo_method(self, h: BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        sent = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.send(h, 200, json.dumps({"method": h.command, "body": sent.decode()}).encode())


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
    assert {"authorization", "cookie", "x-api-key", "proxy-authorization", "x-trace"}.isdisjoint(got)


def test_a_redirect_to_another_origin_carries_no_header_the_user_set(one: Server, other: Server) -> None:
    # Given a secret in a header of the user's own naming, not declared sensitive
    url = f"{one.url}/redirect?to={other.url}/json"
    request(url, headers={"X-Custom-Token": TOKEN}, follow_redirects=True)
    # Then only the step's own headers reach the other origin
    assert one.seen[0]["x-custom-token"] == TOKEN
    assert "x-custom-token" not in other.seen[0] and other.seen[0]["accept"] == "application/json"


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_that_would_resend_the_body_elsewhere_is_refused(one: Server, other: Server, status: int) -> None:
    url = f"{one.url}/redirect?status={status}&to={other.url}/echo-method"
    with pytest.raises(Refused, match=f"a {status} redirect to another origin would re-send the body"):
        request(url, method="POST", json={"token": TOKEN}, follow_redirects=True)
    assert other.seen == []
    # Within the origin the body goes along
    same = request(
        f"{one.url}/redirect?status={status}&to=/echo-method", method="POST", data="d", follow_redirects=True
    )
    assert same["body"] == {"method": "POST", "body": "d"}


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


def test_identity_is_asked_for_unless_the_user_asks_otherwise(one: Server) -> None:
    request(f"{one.url}/json")
    request(f"{one.url}/json", headers={"accept-encoding": "gzip"})
    assert [s["accept-encoding"] for s in one.seen] == ["identity", "gzip"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_answer_is_read(one: Server, coding: str) -> None:
    answer = request(f"{one.url}/packed?coding={coding}&size=5000")
    assert answer["body"] == "\0" * 5000


def test_a_compression_bomb_is_stopped_while_inflating(one: Server) -> None:
    # Given an answer of 50 KB that inflates to 50 MB, sent compressed whatever was asked
    url = f"{one.url}/packed?size={50 * 2**20}"
    request(f"{one.url}/json")  # imports and the TLS context out of the measure
    # When it is read with a 1 MiB cap
    tracemalloc.start()
    try:
        with pytest.raises(Refused, match="over max_bytes"):
            request(url, max_bytes=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Then it is refused with memory bounded by the cap, not by what the answer inflates to
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("max_bytes", [-1, 100 * 2**20 + 1])
def test_max_bytes_is_bounded(max_bytes: int) -> None:
    with pytest.raises(Refused, match="max_bytes must be between 0 and"):
        request("http://127.0.0.1:1/", max_bytes=max_bytes)


def test_an_unknown_compression_is_refused(one: Server) -> None:
    with pytest.raises(Refused, match="only gzip and deflate"):
        request(f"{one.url}/packed?coding=br")


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
        "http://[::169.254.169.254]/",
        "http://[64:ff9b::169.254.169.254]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254 (obfuscated)
        "http://168.63.129.16/machine",
        "http://192.0.0.192/opc/v2/instance/",
        "http://[::ffff:168.63.129.16]/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(Refused, match="ORCHESTRATOR_HTTP_ALLOW"):
        request(url, timeout=2)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.9", "172.16.0.1", "::ffff:10.0.0.1"])
def test_loopback_and_private_addresses_are_allowed(address: str) -> None:
    assert not guard.Policy().address_refused("h", ipaddress.ip_address(address))


def test_an_allowed_network_lets_its_embedded_forms_through() -> None:
    policy = guard.Policy("169.254.169.254/32")
    assert not policy.address_refused("h", ipaddress.ip_address("64:ff9b::169.254.169.254"))


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


def test_an_error_page_quoting_the_body_or_basic_credentials_hides_them(one: Server) -> None:
    # Given a body string and URL credentials that the error page quotes across its 200-character cut
    url = f"http://user:{TOKEN}@{one.url.removeprefix('http://')}/echo-body"
    with pytest.raises(ServerError) as caught:
        request(url, method="POST", json={"nested": [{"token": TOKEN}]})
    text = str(caught.value)
    # Then neither the value, its start, nor the Basic credentials appear
    basic = base64.b64encode(f"user:{TOKEN}".encode()).decode()
    assert "***" in text and TOKEN[:8] not in text and basic[:8] not in text
    with pytest.raises(ServerError) as caught:
        request(f"{one.url}/echo-body", method="POST", data=f"token={TOKEN}")
    assert " got ***" in str(caught.value) and TOKEN[:8] not in str(caught.value)


def test_a_hop_started_past_the_deadline_is_a_timeout() -> None:
    import httpx

    deadline = guard.Deadline(0.01)
    time.sleep(0.02)
    with http._client(deadline) as client, pytest.raises(TimeoutError, match=r"within 0.01s"):
        http._send(client, "GET", httpx.URL("http://127.0.0.1:1/"), {}, None, deadline)
