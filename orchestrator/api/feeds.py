"""Where the live-update hub hears that runs changed. By default one poll of the event log every
``DEFAULT_LIVE_POLL_S`` on one connection of its own (PostgreSQL and SQLite alike); on PostgreSQL,
opt-in (``ORCHESTRATOR_LIVE_NOTIFY``), ``LISTEN`` on the notifications of the event log's trigger
(migration 0011), with a read of the log where a notification cannot say which runs changed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa

from orchestrator.errors import StateStoreError
from orchestrator.settings import DEFAULT_LIVE_CHECK_S, DEFAULT_LIVE_LOOK_BACK_S, DEFAULT_LIVE_RECONNECT_S
from orchestrator.store import Repository

log = logging.getLogger(__name__)

CHANNEL = "orchestrator_events"  # as the trigger of migration 0011 names it
EVERY_RUN = "*"  # the trigger's payload for a statement of too many runs to list
APPLICATION_NAME = "orchestrator-live"  # the feed's connection, as pg_stat_activity shows it
_CONNECT_WAIT_S = 5.0  # start() waits this long for the first LISTEN, then goes on trying behind
_READ = (
    "SELECT run_id, max(id), count(*), sum(CASE WHEN id > {next} THEN 1 ELSE 0 END) "
    "FROM events WHERE id > {floor} GROUP BY run_id"
)


@dataclass(frozen=True)
class Change:
    """Runs that changed. ``runs`` None: any followed run may have (look at all); ``resync``: the
    feed may have missed changes, followers start again from full views. ``since``: the changes
    are of what happened after then (a resync's last known point)."""

    runs: frozenset[str] | None
    since: datetime | None = None
    resync: bool = False


Listener = Callable[[Change], None]


class LogReader:
    """Which runs the event log says changed since the last read, correct although PostgreSQL's
    commits come out of id order (an id is taken at insert, the row shows at commit: a read of
    ``id > last`` would skip an event committed late with a lower id). Each read looks again at the
    ids above the high mark of ``window_s`` ago, one range read of the primary key grouped by run;
    a run changed when its highest id or its number of events there differs from the last read's.
    What it holds is one entry per run with events in the window, and one mark per read in it."""

    def __init__(self, last_id: int, window_s: float = DEFAULT_LIVE_LOOK_BACK_S) -> None:
        self.window_s = window_s
        self.floor = last_id
        self.high = last_id
        self.read_at = datetime.now(UTC)  # the last read that succeeded
        self._marks: deque[tuple[float, int]] = deque([(time.monotonic(), last_id)])
        self._known: dict[str, tuple[int, int]] = {}  # per run: its highest id, its events above the floor
        self._next = last_id

    def query(self, style: str = "sqlalchemy") -> tuple[str, dict[str, int]]:
        """The next read: its SQL (``sqlalchemy`` or psycopg's ``pyformat``) and parameters."""
        cutoff = time.monotonic() - self.window_s
        while len(self._marks) > 1 and self._marks[1][0] <= cutoff:
            self._marks.popleft()
        self._next = self._marks[0][1] if self._marks[0][0] <= cutoff else self.floor
        names = ("next", "floor")
        marks = {n: f":{n}" if style == "sqlalchemy" else f"%({n})s" for n in names}
        return _READ.format(**marks), {"next": self._next, "floor": self.floor}

    def take(self, rows: Iterable[Any]) -> frozenset[str]:
        """The runs that changed, from the rows of ``query()``'s read."""
        changed, known, high = set(), {}, self.high
        for run_id, top, count, above_next in rows:
            top, count, above_next = int(top), int(count), int(above_next or 0)
            high = max(high, top)
            if self._known.get(run_id) != (top, count):
                changed.add(run_id)
            if above_next:
                known[run_id] = (top, above_next)
        self._known, self.floor, self.high = known, self._next, high
        self._marks.append((time.monotonic(), high))
        self.read_at = datetime.now(UTC)
        return frozenset(changed)

    def read(self, connection: sa.Connection) -> frozenset[str]:
        sql, params = self.query()
        return self.take(connection.execute(sa.text(sql), params))


def _last_id(connection: sa.Connection) -> int:
    return int(connection.execute(sa.text("SELECT max(id) FROM events")).scalar() or 0)


class PollFeed:
    """One read of the event log every ``interval_s`` (``LogReader``), whatever the number of
    streams; on PostgreSQL on one connection of its own (``APPLICATION_NAME``): one that drops
    fails a read, and the next read has a new one, missing nothing."""

    def __init__(self, repo: Repository, listener: Listener, interval_s: float) -> None:
        self._listener, self._interval_s = listener, interval_s
        self._engine = repo.engine
        if repo.engine.dialect.name == "postgresql":
            self._engine = sa.create_engine(
                repo.engine.url,
                pool_size=1,
                max_overflow=0,
                pool_recycle=3600,
                connect_args={"connect_timeout": 5, "application_name": APPLICATION_NAME},
            )
        self._own = self._engine is not repo.engine
        self._reader: LogReader | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._reader = await asyncio.to_thread(self._open)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("live updates: cannot read the event log yet: %s", exc)
        self._task = asyncio.create_task(self._run(), name="live-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._own:
            self._engine.dispose()

    def _open(self) -> LogReader:
        with self._engine.connect() as connection:
            return LogReader(_last_id(connection))

    def _read(self) -> frozenset[str]:
        if self._reader is None:
            self._reader = self._open()
            return frozenset()
        with self._engine.connect() as connection:
            return self._reader.read(connection)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                runs = await asyncio.to_thread(self._read)
            except (sa.exc.SQLAlchemyError, StateStoreError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("live updates: cannot read the event log: %s", reason)
                continue
            if runs:
                self._listener(Change(runs))


class PostgresFeed:
    """Opt-in: one dedicated autocommit connection doing ``LISTEN``, read with psycopg's async
    ``notifies()``. A ``*`` notification, and each (re)connection, read the event log on the same
    connection (``LogReader``) for the runs changed since the last known point: a reconnection
    tells those runs, as a resync (with a growing backoff while the database is away)."""

    def __init__(self, repo: Repository, listener: Listener) -> None:
        url = repo.engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._shown = repo.url
        self._listener = listener
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reader: LogReader | None = None
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
            try:
                async with await self._connect() as conn:
                    self.connections += 1
                    if self._reader is None:
                        found = await (await conn.execute("SELECT coalesce(max(id), 0) FROM events")).fetchone()
                        self._reader = LogReader(int(str(found[0])) if found else 0)
                        self._ready.set()
                    else:
                        since = self._reader.read_at - timedelta(seconds=self._reader.window_s)
                        runs = await self._read(conn)
                        self._ready.set()
                        self._listener(Change(None, since=since, resync=True))  # the followed runs' full views
                        if runs:
                            self._listener(Change(runs, since=since, resync=True))
                    delay = first
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

    async def _read(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> frozenset[str]:
        assert self._reader is not None
        sql, params = self._reader.query("pyformat")
        cursor = await conn.execute(sql, params)
        return self._reader.take(await cursor.fetchall())

    async def _drain(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        while True:
            every = False
            async with aclosing(conn.notifies(timeout=DEFAULT_LIVE_CHECK_S)) as notes:
                async for note in notes:  # the connection is locked meanwhile: read after it
                    if note.payload == EVERY_RUN:
                        every = True
                        break
                    self._listener(Change(frozenset(note.payload.split(","))))
            if every:  # a statement of too many runs to name: the log names them
                runs = await self._read(conn)
                if runs:
                    self._listener(Change(runs))
            else:
                await conn.execute("SELECT 1")  # quiet for a while: is the connection still there?
