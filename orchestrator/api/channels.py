"""The fan-out of live updates: a subscriber's bounded queue of server-sent events, one shared
``RunWatch`` per followed run, and the run list's feed of summaries."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.api.feeds import Change
from orchestrator.errors import OrchestratorError
from orchestrator.runtime.views import RunWatch, summary
from orchestrator.settings import DEFAULT_LIVE_READ_RETRY_S
from orchestrator.store import Repository, RunRow

log = logging.getLogger(__name__)

PING = b": ping\n\n"
_READ_CHUNK = 1000  # runs read per query of the run list
_NOT_SUMMARY = frozenset({"steps", "dead_letters", "transitions", "state"})  # a run view's keys beyond its summary


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def frame(kind: str, data: str) -> bytes:
    """One server-sent event, encoded once for all its subscribers; ``data`` is JSON text (one line)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


class Subscriber:
    """One open stream: the events it has still to send, at most ``limit`` of them. One that
    falls further behind is dropped (its stream ends, the client reconnects): a slow reader costs
    the server a bounded queue, never a growing one."""

    def __init__(self, limit: int, want: Callable[[RunRow], bool] | None = None) -> None:
        self.limit = limit
        self.want = want  # the list stream's filters
        self.channel: RunChannel | None = None
        self.ended = self.dropped = False
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def push(self, event: bytes) -> bool:
        """Queue an event; False once this subscriber is gone (ended, or dropped just now)."""
        if self.ended:
            return False
        if self._queue.qsize() >= self.limit:
            self.drop()
            return False
        self._queue.put_nowait(event)
        return True

    def finish(self) -> None:
        """The stream ends once what is queued has been sent."""
        if not self.ended:
            self.ended = True
            self._queue.put_nowait(None)

    def drop(self) -> None:
        """The stream ends now: what it had still to send is forgotten."""
        if not self.ended:
            self.dropped = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self.finish()

    async def events(self, ping_s: float) -> AsyncIterator[bytes]:
        """The stream's bytes: each event as it comes, those already queued behind it in the same
        write (a reader that lags gets fewer, larger writes), a ping after ``ping_s`` of quiet."""
        while True:
            try:
                async with asyncio.timeout(ping_s):
                    event = await self._queue.get()
            except TimeoutError:
                yield PING
                continue
            batch = []
            while event is not None:
                batch.append(event)
                if self._queue.empty():
                    break
                event = self._queue.get_nowait()
            if batch:
                yield b"".join(batch)
            if event is None:
                return


@dataclass
class _Polled:
    change: bytes | None  # the change event, None when the view did not change
    full: bytes | None  # the whole view as an ``event: run``, when asked for
    end: bytes | None  # the end event, once the run has ended


class RunChannel:
    """One run followed for all its subscribers: one ``RunWatch``, polled once per change however
    many streams are open, each poll's changed steps found by comparing each step's JSON with the
    last poll's. A change that arrives while a poll runs asks for one more poll, not one each."""

    def __init__(self, repo: Repository, run_id: str, on_empty: Callable[[RunChannel], None]) -> None:
        self.repo, self.run_id = repo, run_id
        self.subscribers: set[Subscriber] = set()
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._on_empty = on_empty
        self._lock = asyncio.Lock()
        self._dirty = self._resync = False
        self._watch: RunWatch | None = None
        self._steps: dict[str, str] = {}  # each step's view as last sent, JSON
        self._run = ""
        self._full: bytes | None = None  # the view as an ``event: run``, while it is current

    async def open(self) -> None:
        """Start following the run (NotFound when there is none)."""
        async with self._lock:
            try:
                self._watch = await asyncio.to_thread(RunWatch, self.repo, self.run_id)
                await asyncio.to_thread(self._diff, self._watch.view)
            except BaseException:
                self.closed = True
                raise

    async def join(self, subscriber: Subscriber) -> bool:
        """Send ``subscriber`` the full view and then every change; False if this channel has
        closed meanwhile (its run ended, its last subscriber left): join a new one."""
        async with self._lock:
            if self.closed or self._watch is None:
                return False
            if self._full is None:
                self._full = await asyncio.to_thread(self._render_full)
            subscriber.push(self._full)
            if self._watch.done:
                subscriber.push(self._end())
                subscriber.finish()
                return True
            subscriber.channel = self
            self.subscribers.add(subscriber)
            return True

    def leave(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self.close()

    def close(self) -> None:
        """No one is left to tell: forget the watch (a poll under way is cancelled)."""
        if not self.closed:
            self.closed = True
            for subscriber in list(self.subscribers):
                subscriber.finish()
            self.subscribers.clear()
            if self.task is not None and self.task is not asyncio.current_task():
                self.task.cancel()
            self._on_empty(self)

    def touch(self, resync: bool = False) -> None:
        """The run changed: poll it (once more, if a poll is already under way)."""
        if self.closed:
            return
        self._dirty, self._resync = True, self._resync or resync
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._polls(), name=f"live-run-{self.run_id}")

    async def _polls(self) -> None:
        while self._dirty and not self.closed:
            self._dirty = False
            async with self._lock:
                if self.closed:
                    return
                resync, self._resync = self._resync, False
                try:
                    polled = await asyncio.to_thread(self._poll, resync)
                except OrchestratorError as exc:
                    log.warning("live updates: run %s cannot be followed: %s", self.run_id, exc)
                    self.close()  # its streams end; the clients reconnect
                    return
                except Exception:
                    log.exception("live updates: following run %s failed", self.run_id)
                    self.close()
                    return
                self._publish(polled)

    def _publish(self, polled: _Polled) -> None:
        events = [e for e in (polled.full or polled.change, polled.end) if e is not None]
        for subscriber in list(self.subscribers):
            if not all(subscriber.push(e) for e in events):
                self.subscribers.discard(subscriber)
        if polled.end is not None:
            self.close()
        # A channel left with no subscriber is closed by their leave(), never here: a poll queued
        # while open() held the lock finds none yet, and join() is still to come.

    # In a worker thread, under the lock:

    def _poll(self, resync: bool) -> _Polled:
        assert self._watch is not None
        view = self._watch.poll()
        change = self._diff(view)
        if change is not None:
            self._full = None
        full = None
        if resync:
            full = self._full = self._render_full()
        end = self._end() if self._watch.done else None
        if end is not None and change is None:  # the run's last change comes before its end, always
            change = frame("change", f'{{"run":{self._run},"steps":{{}}}}')
        return _Polled(change, full, end)

    def _diff(self, view: dict[str, Any]) -> bytes | None:
        """The change event since the last poll (None: nothing changed); the steps remembered."""
        run = dumps({k: v for k, v in view.items() if k not in _NOT_SUMMARY})
        changed = []
        for name, step in view["steps"].items():
            text = dumps(step)
            if self._steps.get(name) != text:
                self._steps[name] = text
                changed.append(f"{dumps(name)}:{text}")
        if not changed and run == self._run:
            return None
        self._run = run
        return frame("change", f'{{"run":{run},"steps":{{{",".join(changed)}}}}}')

    def _render_full(self) -> bytes:
        assert self._watch is not None
        return frame("run", dumps(self._watch.view))

    def _end(self) -> bytes:
        assert self._watch is not None
        return frame("end", dumps({"run_id": self.run_id, "status": self._watch.view["status"]}))


class ListChannel:
    """The run list's stream: the summaries of the runs that changed status (or first showed up),
    read in one query per burst of changes, to each subscriber whose filters they match. The last
    status told (or seen at start) of each of the ``kept`` runs seen last is remembered, so a read of
    many runs (a resync) tells only news."""

    def __init__(self, repo: Repository, kept: int, retry_s: float = DEFAULT_LIVE_READ_RETRY_S) -> None:
        self.repo = repo
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._kept, self._retry_s = kept, retry_s
        self._statuses: OrderedDict[str, str] = OrderedDict()  # the last status told, per run
        self._pending: set[str] = set()

    def add(self, subscriber: Subscriber) -> bool:
        """False (the subscriber finished) once the channel has closed."""
        if self.closed:
            subscriber.finish()
            return False
        self.subscribers.add(subscriber)
        return True

    def seed(self) -> None:
        """In a worker thread: remember the open runs' statuses (at most ``kept``), as the list
        shows them now, so the first resync does not tell them all again."""
        with self.repo.transaction() as tx:
            rows = tx.open_runs(self._kept)
        for row in rows:
            self._remember(row.id, str(row.status))

    def touch(self, change: Change) -> None:
        """Runs changed: read those named (a change naming none is for the followed runs alone:
        the feeds name every run the log says changed)."""
        if not self.subscribers or change.runs is None or self.closed:
            return
        self._pending |= change.runs
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._reads(), name="live-run-list")

    def close(self) -> None:
        self.closed = True
        for subscriber in list(self.subscribers):
            subscriber.finish()
        self.subscribers.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _reads(self) -> None:
        while self._pending and self.subscribers:
            pending, self._pending = self._pending, set()
            try:
                told = await asyncio.to_thread(self._read, pending)
            except Exception as exc:
                if isinstance(exc, OrchestratorError):
                    log.warning("live updates: the run list cannot be read: %s", exc)
                else:
                    log.exception("live updates: reading the run list failed")
                self._pending |= pending  # not lost: read again in a while
                await asyncio.sleep(self._retry_s)
                continue
            for row, event in told:
                for subscriber in list(self.subscribers):
                    if subscriber.want is not None and subscriber.want(row) and not subscriber.push(event):
                        self.subscribers.discard(subscriber)

    def _remember(self, run_id: str, status: str) -> bool:
        """False when ``status`` is what was last told of the run."""
        if self._statuses.get(run_id) == status:
            return False
        self._statuses[run_id] = status
        self._statuses.move_to_end(run_id)
        if len(self._statuses) > self._kept:
            self._statuses.popitem(last=False)
        return True

    def _read(self, runs: set[str]) -> list[tuple[RunRow, bytes]]:
        """In a worker thread: the runs whose status is news, with their ``event: run``."""
        ids, rows = sorted(runs), []
        with self.repo.transaction() as tx:
            for start in range(0, len(ids), _READ_CHUNK):
                rows += tx.runs_by_id(ids[start : start + _READ_CHUNK])
        told = []
        for row in sorted(rows, key=lambda r: r.created_at):
            if self._remember(row.id, str(row.status)):
                told.append((row, frame("run", dumps(summary(row)))))
        return told
