"""The drills' proxy itself, against a local echo server: each mode does what the drills rely on."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import BLACKHOLE, PASS, REFUSE, Proxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(1024):
                    conn.sendall(data)
            except ConnectionError:
                return  # the proxy reset it: what refuse is for

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    with Proxy(server.getsockname()[:2]) as found:
        yield found
    server.close()


def _connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=2)


def _echo(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def test_pass_forwards_both_ways(proxy: Proxy) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock) == b"ping"


def _closed(sock: socket.socket) -> bool:
    """True when the other end closed or reset the connection."""
    try:
        sock.sendall(b"ping")
        return sock.recv(1024) == b""
    except ConnectionError:
        return True


def test_refuse_resets_open_and_new_connections(proxy: Proxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock) == b"ping"
    proxy.set_mode(REFUSE)
    assert _closed(sock)
    try:
        fresh = _connect(proxy)
    except ConnectionResetError:
        pass  # reset before connect() returned: the handshake completed, the reset came first
    else:
        with fresh:
            assert _closed(fresh)
    proxy.set_mode(PASS)
    with _connect(proxy) as again:
        assert _echo(again) == b"ping"
    sock.close()


def test_blackhole_neither_answers_nor_closes_and_delivers_once_healed(proxy: Proxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock) == b"ping"
    proxy.set_mode(BLACKHOLE)
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        _echo(sock, b"held")
    with _connect(proxy) as fresh:  # a new connection is accepted, and hangs too
        fresh.settimeout(0.5)
        with pytest.raises(TimeoutError):
            _echo(fresh)
    proxy.set_mode(PASS)
    sock.settimeout(2)
    assert sock.recv(1024) == b"held"  # the partition healed: the held bytes went through
    sock.close()


def test_an_unknown_mode_is_refused(proxy: Proxy) -> None:
    with pytest.raises(ValueError, match="unknown proxy mode 'down'"):
        proxy.set_mode("down")
