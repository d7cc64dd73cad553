"""A TCP proxy the drills control: the network between the orchestrator's processes and a service.

Modes:
- ``pass``: bytes flow both ways;
- ``refuse``: the service is down: new connections are reset at once and open ones are reset;
- ``blackhole``: a half-open partition: connections are accepted and kept, but nothing is forwarded
  and nothing is closed, so a client's reads hang until its own timeouts notice.

A thread per direction of each connection; the proxy lives in the test process, so the services
of the machine are never stopped or reconfigured.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from types import TracebackType

PASS = "pass"
REFUSE = "refuse"
BLACKHOLE = "blackhole"
MODES = (PASS, REFUSE, BLACKHOLE)
_TICK_S = 0.05
_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0): what a client sees when the service's host is gone."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed by the other side: closing it is all that is left
    sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class Proxy:
    """Listens on ``listen_host`` (an ephemeral port unless ``listen_port``) and forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.upstream = upstream
        self._mode = PASS
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.create_server((listen_host, listen_port), reuse_port=False)
        self._listener.settimeout(_TICK_S)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch mode; ``refuse`` resets every open connection, as a stopped service would."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}: one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            dropped = list(self._links) if mode == REFUSE else []
        for link in dropped:
            self._forget(link)

    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    def url(self, template: str) -> str:
        """``template`` with ``{host}`` and ``{port}`` filled: e.g. ``redis://{host}:{port}/3``."""
        return template.format(host=self.host, port=self.port)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            self._forget(link)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        mode = self._mode
        if mode == REFUSE:
            _reset(client)
            return
        upstream = None
        if mode == PASS:
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                return
        link = _Link(client, upstream)
        with self._lock:
            self._links.add(link)
        threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link: _Link) -> None:
        """Forward both ways while in ``pass``; in ``blackhole``, read nothing and close nothing."""
        try:
            while not link.closed.is_set() and not self._stopped.is_set():
                if self._mode != PASS or link.upstream is None:
                    # A link accepted during a blackhole has no upstream: it stays a silent hole,
                    # even once the partition heals (as a half-open TCP connection would).
                    link.closed.wait(_TICK_S)
                    continue
                if not self._forward_ready(link, link.client, link.upstream):
                    break
        except OSError:
            pass  # either side went away: the link is closed below
        self._forget(link)

    def _forward_ready(self, link: _Link, client: socket.socket, upstream: socket.socket) -> bool:
        readable, _, _ = select.select([client, upstream], [], [], _TICK_S)
        for source in readable:
            if self._mode != PASS:
                return True  # a partition began while waiting: hold the bytes
            data = source.recv(_CHUNK)
            if not data:
                return False
            (upstream if source is client else client).sendall(data)
        return True

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
        link.close()
