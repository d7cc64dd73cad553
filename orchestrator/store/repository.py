"""The repository: every read and write of run state goes through here, in explicit transactions.

``Repository.transaction()`` yields a ``Tx`` bound to one connection and one database
transaction; the scheduler does all of one "advance" inside a single ``Tx``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.errors import StateStoreError, StoreRefused
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import tables as t
from orchestrator.store.audit import AuditQueries
from orchestrator.store.breaker_state import BreakerStateQueries
from orchestrator.store.cache import CacheQueries
from orchestrator.store.database import check_reachable, get_engine, redact
from orchestrator.store.dead_letters import DeadLetterQueries
from orchestrator.store.leases import LeaseQueries
from orchestrator.store.live import LiveQueries
from orchestrator.store.metrics import MetricQueries
from orchestrator.store.pages import PageQueries, RunFilter
from orchestrator.store.recovery import RecoveryQueries
from orchestrator.store.report import ReportQueries
from orchestrator.store.rows import STEP_ROW, RunRow, aware, now
from orchestrator.store.schedules import ScheduleQueries
from orchestrator.store.secrets import SecretQueries
from orchestrator.store.sql import insert_if_absent
from orchestrator.store.steps import StepQueries
from orchestrator.store.versions import VersionQueries
from orchestrator.store.waits import WaitQueries
from orchestrator.urls import scrub

_RUN = sa.select(t.runs).where(t.runs.c.id == sa.bindparam("run_id"))
_RUN_LOCKED = _RUN.with_for_update()


class Tx(
    StepQueries,
    PageQueries,
    WaitQueries,
    LeaseQueries,
    RecoveryQueries,
    DeadLetterQueries,
    BreakerStateQueries,
    VersionQueries,
    CacheQueries,
    ScheduleQueries,
    ReportQueries,
    MetricQueries,
    AuditQueries,
    SecretQueries,
    LiveQueries,
):
    """One transaction's worth of queries: definitions, runs and events here; steps, waits and
    signals, leases, dead letters, breaker state, registered versions, the step cache, schedules,
    the audit log, live updates and recovery (reconciling, replaying) in their own modules."""

    def __init__(self, connection: sa.Connection) -> None:
        self.c = connection
        self.dialect = connection.dialect.name
        self._events: list[dict[str, Any]] = []  # written before the transaction commits

    # Definitions and subscriptions

    def save_definition(self, version: str, name: str, snapshot: dict[str, Any]) -> None:
        values = {"version": version, "name": name, "snapshot": snapshot, "created_at": now()}
        if insert_if_absent(self.c, t.definitions, values):
            for event in sorted(_wait_events(snapshot)):
                insert_if_absent(self.c, t.wait_events, {"event": event, "first_seen": values["created_at"]})

    def is_awaited(self, event: str) -> bool:
        """Whether any stored definition has a step that waits on ``event``."""
        query = sa.select(t.wait_events.c.event).where(t.wait_events.c.event == event)
        return self.c.execute(query).first() is not None

    def definition(self, version: str) -> dict[str, Any] | None:
        row = self.c.execute(sa.select(t.definitions.c.snapshot).where(t.definitions.c.version == version)).first()
        return None if row is None else row[0]

    def subscribe(self, workflow: str, version: str, entries: Sequence[tuple[int, str, str]]) -> None:
        """``version`` of ``workflow`` is active: its ``on`` entries (index, kind, source) replace
        the previous version's."""
        sub = t.subscriptions.c
        self.c.execute(t.subscriptions.delete().where(sub.workflow == workflow))
        if entries:
            rows = [
                {"workflow": workflow, "entry": i, "version": version, "kind": kind, "source": source}
                for i, kind, source in entries
            ]
            self.c.execute(t.subscriptions.insert(), rows)

    def subscribers(self, kind: str, source: str) -> list[tuple[str, str, int]]:
        """(workflow, version, entry) of every active ``on`` entry waiting for ``kind``/``source``."""
        sub = t.subscriptions.c
        query = (
            sa.select(sub.workflow, sub.version, sub.entry)
            .where(sub.kind == kind, sub.source == source)
            .order_by(sub.workflow, sub.entry)
        )
        return [(r[0], r[1], r[2]) for r in self.c.execute(query)]

    # Runs

    def run_for_key(self, key: str) -> str | None:
        row = self.c.execute(sa.select(t.runs.c.id).where(t.runs.c.idempotency_key == key)).first()
        return None if row is None else row[0]

    def insert_run(
        self,
        run_id: str,
        workflow: str,
        version: str,
        inputs: Any,
        key: str | None,
        needs: Mapping[str, int],
        **origin: Any,
    ) -> None:
        """A pending run and its step rows; ``needs`` maps each step to how many needs it has;
        ``origin``: a child's parent_run_id, parent_step_run_id and depth, a chained run's
        started_by and chain_depth."""
        at = now()
        self.c.execute(
            t.runs.insert().values(
                id=run_id,
                workflow=workflow,
                version=version,
                status=RunStatus.PENDING,
                inputs=inputs,
                idempotency_key=key,
                created_at=at,
                **origin,
            )
        )
        if needs:
            self.c.execute(
                t.step_runs.insert(),
                [
                    {
                        "run_id": run_id,
                        "step": s,
                        "item_index": STEP_ROW,
                        "status": StepStatus.PENDING,
                        "attempts": 0,
                        "needs_open": n,
                    }
                    for s, n in needs.items()
                ],
            )

    def lock_run(self, run_id: str) -> RunRow | None:
        """The run, locked until the transaction ends (SQLite: the database write lock)."""
        query = _RUN_LOCKED if self.dialect == "postgresql" else _RUN
        row = self.c.execute(query, {"run_id": run_id}).first()
        return None if row is None else RunRow.from_row(row)

    def run(self, run_id: str) -> RunRow | None:
        row = self.c.execute(_RUN, {"run_id": run_id}).first()
        return None if row is None else RunRow.from_row(row)

    def update_run(self, run_id: str, **values: Any) -> None:
        self.c.execute(t.runs.update().where(t.runs.c.id == run_id).values(**values))

    def runs(self, status: str | None, workflow: str | None, limit: int, parent: str | None = None) -> list[RunRow]:
        """The first page of the run list (``runs`` in the CLI): the API's query, without a cursor."""
        return self.runs_page(RunFilter(status, workflow, parent), limit)

    # Child runs

    def children(self, run_id: str) -> list[RunRow]:
        """The child runs of a run's steps (every attempt's), oldest first."""
        query = sa.select(t.runs).where(t.runs.c.parent_run_id == run_id).order_by(t.runs.c.created_at, t.runs.c.id)
        return [RunRow.from_row(r) for r in self.c.execute(query)]

    def open_descendants(self, run_id: str) -> list[str]:
        """Every run below ``run_id`` that has not ended, parents before their children."""
        found: list[str] = []
        frontier = [run_id]
        while frontier:
            query = sa.select(t.runs.c.id).where(
                t.runs.c.parent_run_id.in_(frontier), t.runs.c.status.in_(RunStatus.open_values())
            )
            frontier = sorted(r[0] for r in self.c.execute(query))
            found += frontier
        return found

    def child_ended(self, parent_step_run_id: int, child_id: str, at: datetime) -> bool:
        """The step (or item) waiting on child run ``child_id`` is due to wake: True if it was
        still waiting on that very child (a retried step waits on a newer one)."""
        s = t.step_runs.c
        statement = (
            t.step_runs.update()
            .where(
                s.id == parent_step_run_id,
                s.status == StepStatus.WAITING,
                s.wait_kind == "workflow",
                s.wait_key == child_id,
            )
            .values(wake="child", not_before=at)
        )
        return self.c.execute(statement).rowcount == 1

    def orphaned_children(self, limit: int = 100) -> list[str]:
        """Child runs still open whose parent step no longer waits on them (the parent was
        cancelled or failed, the step skipped, accepted or retried): they are to be stopped."""
        r, s = t.runs.c, t.step_runs.c
        waited = (
            sa.select(s.id)
            .where(
                s.id == r.parent_step_run_id,
                s.status == StepStatus.WAITING,
                s.wait_kind == "workflow",
                s.wait_key == r.id,
            )
            .exists()
        )
        query = (
            sa.select(r.id)
            .where(r.parent_step_run_id.is_not(None), r.status.in_(RunStatus.open_values()), ~waited)
            .order_by(r.created_at)
            .limit(limit)
        )
        return [row[0] for row in self.c.execute(query)]

    def run_ids(self, statuses: Iterable[str]) -> list[str]:
        query = sa.select(t.runs.c.id).where(t.runs.c.status.in_(list(statuses)))
        return [r[0] for r in self.c.execute(query)]

    # Events

    def add_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Log events: buffered, and written in order with the transaction's next statement that
        takes them (a claim) or just before it commits, so they cost no round trip of their own."""
        self._events.extend(events)

    def take_events(self) -> list[dict[str, Any]]:
        """The buffered events, for a statement that writes them itself (and then owns them)."""
        events, self._events = self._events, []
        return events

    def flush_events(self) -> None:
        events = self.take_events()
        if events:
            self.c.execute(t.events.insert(), events)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        self.flush_events()
        e = t.events.c
        query = sa.select(e.step, e.item_index, e.kind, e.detail, e.at).where(e.run_id == run_id).order_by(e.id)
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]

    def events_after(self, run_id: str, after_id: int, limit: int) -> list[dict[str, Any]]:
        """The run's events with an id above ``after_id``, oldest first, at most ``limit``: what a
        follower has not seen yet, read through the (run_id, id) index."""
        self.flush_events()
        e = t.events.c
        query = (
            sa.select(e.id, e.step, e.item_index, e.kind, e.detail, e.at)
            .where(e.run_id == run_id, e.id > after_id)
            .order_by(e.id)
            .limit(limit)
        )
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]


def _wait_events(snapshot: dict[str, Any]) -> set[str]:
    steps = {**(snapshot.get("steps") or {}), **(snapshot.get("states") or {})}
    found = set()
    for step in steps.values():
        wait = step.get("wait") if isinstance(step, dict) else None
        if isinstance(wait, dict) and isinstance(wait.get("event"), str):
            found.add(wait["event"])
    return found


class Repository:
    """The state store: opens transactions on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._url_text = engine.url.render_as_string(hide_password=False)

    @classmethod
    def from_url(cls, url: str) -> Repository:
        return cls(get_engine(url))

    @property
    def url(self) -> str:
        return redact(self.engine.url)

    def check(self) -> None:
        check_reachable(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._errors():
            with self.engine.begin() as connection:
                tx = Tx(connection)
                yield tx
                tx.flush_events()

    @contextmanager
    def statements(self) -> Iterator[Tx]:
        """A ``Tx`` whose every statement commits by itself (PostgreSQL), for one-statement changes.

        Only for a change whose loss the system repairs by itself, since these commits do not wait
        for the disk (``synchronous_commit=off``): if the server crashes, the last fraction of a
        second of them may be gone. The one user is a worker's claim: a lost claim leaves its step
        queued, the worker's outcome is refused (its write requires the step to be running), and the
        reconciler sends the step again (at least once, as any lost message). Every later commit
        that waits for the disk, the step's own end included, makes the claim durable with it:
        PostgreSQL writes its log in order."""
        if self.engine.dialect.name != "postgresql":
            with self.transaction() as tx:
                yield tx
            return
        with self._errors():
            with get_engine(self._url_text, autocommit=True).connect() as connection:
                tx = Tx(connection)
                yield tx
                tx.flush_events()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.DataError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreRefused(f"the state store at {self.url} refused the data: {reason}") from exc
        except sa.exc.TimeoutError as exc:
            raise StateStoreError(f"state store error at {self.url}: no connection free in the pool ({exc})") from exc
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.InterfaceError) as exc:
            reason = scrub(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), self._url_text)
            if "no such table" in reason or "does not exist" in reason:
                raise StateStoreError(
                    f"the state store at {self.url} has no orchestrator schema: run 'orchestrator db upgrade'"
                ) from exc
            raise StateStoreError(f"state store error at {self.url}: {reason}") from exc
