"""Test helpers for server-sent events: the app served by a real uvicorn on an ephemeral port (in
a thread of the test process), and a reader of one stream on an ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.live import Hub
from orchestrator.api.tokens import Token
from orchestrator.store import Repository


@dataclass
class Served:
    url: str
    hub: Hub


@contextmanager
def serving(repo: Repository, tokens: Sequence[Token] = (), notify: bool = False) -> Iterator[Served]:
    """The app on ``repo``; its live updates poll the event log, or with ``notify`` LISTEN."""
    app = create_app(repo, lambda: [], list(tokens), 0.0, live_notify=notify)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.hub)
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass(frozen=True)
class Event:
    kind: str  # "ping" for a comment line
    data: Any


class EventReader:
    """One open stream; its events, in order, as they arrive."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        self.client, self.url, self.headers = client, url, headers or {}
        self.response: httpx.Response | None = None
        self.closed = False
        self.error: httpx.HTTPError | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> EventReader:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 30)
        return self

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", self.url, headers=self.headers) as response:
                self.response = response
                self._opened.set()
                kind = None
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        self._events.put_nowait(Event("ping", None))
                    elif line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: ") and kind is not None:
                        self._events.put_nowait(Event(kind, json.loads(line.removeprefix("data: "))))
                        kind = None
        except httpx.HTTPError as exc:  # the server went away mid-stream: the stream has closed
            self.error = exc
        finally:
            self._opened.set()
            self._events.put_nowait(None)

    async def next(self, timeout: float = 30.0) -> Event | None:
        """The next event; None once the stream has closed."""
        if self.closed:
            return None
        event = await asyncio.wait_for(self._events.get(), timeout)
        self.closed = event is None
        return event

    async def until(
        self, kind: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 30.0
    ) -> list[Event]:
        """The events up to and including the first ``kind`` event whose data ``where`` accepts."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            assert event is not None, f"the stream closed before a matching {kind!r}: {seen}"
            seen.append(event)
            if event.kind == kind and where(event.data):
                return seen

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def step_status(event: Event, step: str) -> str | None:
    """The step's status in a ``run`` or ``change`` event (None: the event does not show it)."""
    data = event.data if event.kind in ("run", "change") else {}
    found = (data.get("steps") or {}).get(step)
    return None if found is None else found["status"]


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)
