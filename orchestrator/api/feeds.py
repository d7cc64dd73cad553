"""Where the live-update hub hears that runs changed: PostgreSQL ``LISTEN`` on the notifications
of the event log's trigger (migration 0011), or on SQLite one poll of the event log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from orchestrator.errors import StateStoreError
from orchestrator.settings import DEFAULT_LIVE_CHECK_S, DEFAULT_LIVE_LOOK_BACK_S, DEFAULT_LIVE_RECONNECT_S
from orchestrator.store import Repository

log = logging.getLogger(__name__)

CHANNEL = "orchestrator_events"  # as the trigger of migration 0011 names it
EVERY_RUN = "*"  # the trigger's payload for a statement of too many runs to list
APPLICATION_NAME = "orchestrator-live"  # the listener's connection, as pg_stat_activity shows it
_CONNECT_WAIT_S = 5.0  # start() waits this long for the first LISTEN, then goes on trying behind


@dataclass(frozen=True)
class Change:
    """Runs that changed. ``runs`` None: any run may have (look at all), ``since`` then says how
    far back; ``resync``: the feed may have missed changes, followers start again from full views."""

    runs: frozenset[str] | None
    since: datetime | None = None
    resync: bool = False


Listener = Callable[[Change], None]


class PostgresFeed:
    """One dedicated autocommit connection doing ``LISTEN``, read with psycopg's async
    ``notifies()``; when it drops it comes back with a growing backoff, then tells of a resync."""

    def __init__(self, repo: Repository, listener: Listener) -> None:
        url = repo.engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._shown = repo.url
        self._listener = listener
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._heard_at = datetime.now(UTC)  # when the connection last answered
        self.connections = 0  # made so far: a test or the bench sees the reconnects

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-listener")
        try:
            await asyncio.wait_for(self._ready.wait(), _CONNECT_WAIT_S)
        except TimeoutError:
            log.warning("live updates: no LISTEN connection to %s yet; still trying", self._shown)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        first, longest = DEFAULT_LIVE_RECONNECT_S
        delay = first
        while True:
            lost_at = self._heard_at - timedelta(seconds=DEFAULT_LIVE_LOOK_BACK_S)  # commits lag their times
            try:
                async with await self._connect() as conn:
                    self.connections += 1
                    self._heard_at = datetime.now(UTC)
                    self._ready.set()
                    delay = first
                    self._listener(Change(None, since=lost_at, resync=True))
                    await self._drain(conn)
            except psycopg.Error as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("live updates: listener on %s lost (%s); again in %.1fs", self._shown, reason, delay)
            except Exception:
                log.exception("live updates: the listener on %s failed; again in %.1fs", self._shown, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            application_name=APPLICATION_NAME,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            found = await conn.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'events_notify'")
            if await found.fetchone() is None:
                log.warning("live updates: %s has no events_notify trigger: run 'orchestrator db upgrade'", self._shown)
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _drain(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        while True:
            async for note in conn.notifies(timeout=DEFAULT_LIVE_CHECK_S):
                self._heard_at = datetime.now(UTC)
                self._listener(_change_of(note.payload))
            await conn.execute("SELECT 1")  # quiet for a while: is the connection still there?
            self._heard_at = datetime.now(UTC)


def _change_of(payload: str) -> Change:
    if payload == EVERY_RUN:
        return Change(None, since=datetime.now(UTC) - timedelta(seconds=DEFAULT_LIVE_LOOK_BACK_S))
    return Change(frozenset(payload.split(",")))


class PollFeed:
    """SQLite has no ``NOTIFY``: one read of the event log every ``interval_s`` for the ids above
    the last seen (SQLite commits one writer at a time, so ids grow in commit order)."""

    def __init__(self, repo: Repository, listener: Listener, interval_s: float) -> None:
        self._repo, self._listener, self._interval_s = repo, listener, interval_s
        self._after = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._after = await asyncio.to_thread(self._last)
        self._task = asyncio.create_task(self._run(), name="live-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _last(self) -> int:
        with self._repo.transaction() as tx:
            return tx.last_event_id()

    def _read(self) -> list[str]:
        with self._repo.transaction() as tx:
            self._after, runs = tx.runs_logged_after(self._after)
        return runs

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                runs = await asyncio.to_thread(self._read)
            except StateStoreError as exc:
                log.warning("live updates: cannot read the event log: %s", exc)
                continue
            if runs:
                self._listener(Change(frozenset(runs)))
