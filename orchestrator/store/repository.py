"""The repository: every read and write of run state goes through here, in explicit transactions.

``Repository.transaction()`` yields a ``Tx`` bound to one connection and one database
transaction; the scheduler does all of one "advance" inside a single ``Tx``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.errors import StateStoreError
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import tables as t
from orchestrator.store.breaker_state import BreakerStateQueries
from orchestrator.store.database import check_reachable, get_engine, redact
from orchestrator.store.dead_letters import DeadLetterQueries
from orchestrator.store.recovery import RecoveryQueries
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow, aware, event_row, now
from orchestrator.store.sql import insert_if_absent

_s = t.step_runs.c
_CLAIM = (
    t.step_runs.update()
    .where(_s.id == sa.bindparam("row_id"), _s.dispatch_id == sa.bindparam("dispatch"), _s.status == StepStatus.QUEUED)
    .values(
        status=StepStatus.RUNNING,
        attempts=_s.attempts + 1,
        worker=sa.bindparam("worker"),
        started_at=sa.bindparam("at"),
    )
    .returning(*t.step_runs.c)
)
_RUN = sa.select(t.runs).where(t.runs.c.id == sa.bindparam("run_id"))
_RUN_LOCKED = _RUN.with_for_update()
_STEPS_NAMED = (
    sa.select(t.step_runs)
    .where(
        _s.run_id == sa.bindparam("run_id"),
        _s.item_index == STEP_ROW,
        _s.step.in_(sa.bindparam("names", expanding=True)),
    )
    .order_by(_s.id)
)
_OPEN_STEPS = sa.select(sa.func.count()).where(
    _s.run_id == sa.bindparam("run_id"),
    _s.item_index == STEP_ROW,
    _s.status.in_([StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING]),
)


# PostgreSQL: a claim and its event in one statement, so it needs no explicit transaction.
_PG_CLAIM = sa.text("""
WITH claimed AS (
    UPDATE step_runs SET status = 'running', attempts = attempts + 1, worker = :worker, started_at = :at
    WHERE id = :row_id AND dispatch_id = :dispatch AND status = 'queued'
    RETURNING *
), logged AS (
    INSERT INTO events (run_id, step, item_index, kind, detail, at)
    SELECT run_id, step, CASE WHEN item_index = -1 THEN NULL ELSE item_index END, 'step.running',
           jsonb_build_object('attempt', attempts, 'worker', worker), :at
    FROM claimed
)
SELECT claimed.*, runs.version AS run_version FROM claimed JOIN runs ON runs.id = claimed.run_id
""")

# PostgreSQL: a step's end and its attempt record in one statement.
_PG_FINISH = sa.text("""
WITH done AS (
    UPDATE step_runs SET status = :status, output = :output, error = :error, traceback = :traceback,
           finished_at = :at
    WHERE id = :row_id AND dispatch_id = :owner AND status = 'running'
    RETURNING id, attempts, worker, started_at
), tried AS (
    INSERT INTO attempts (step_run_id, number, status, error, worker, started_at, finished_at)
    SELECT id, attempts, :status, :error, worker, started_at, :at FROM done
)
SELECT count(*) FROM done
""").bindparams(sa.bindparam("output", type_=t.Json))


class Tx(RecoveryQueries, DeadLetterQueries, BreakerStateQueries):
    """One transaction's worth of queries: runs and steps here; dead letters, breaker state and
    recovery (reconciling, replaying) in their own modules."""

    def __init__(self, connection: sa.Connection) -> None:
        self.c = connection
        self.dialect = connection.dialect.name

    # Definitions and registrations

    def save_definition(self, version: str, name: str, snapshot: dict[str, Any]) -> None:
        values = {"version": version, "name": name, "snapshot": snapshot, "created_at": now()}
        insert_if_absent(self.c, t.definitions, values)

    def definition(self, version: str) -> dict[str, Any] | None:
        row = self.c.execute(sa.select(t.definitions.c.snapshot).where(t.definitions.c.version == version)).first()
        return None if row is None else row[0]

    def register(self, name: str, version: str) -> bool:
        """Register ``version`` under ``name``; False when it already was."""
        return insert_if_absent(self.c, t.workflows, {"name": name, "version": version, "registered_at": now()})

    def latest_registered(self, name: str) -> str | None:
        w = t.workflows.c
        query = sa.select(w.version).where(w.name == name).order_by(w.registered_at.desc(), w.id.desc()).limit(1)
        row = self.c.execute(query).first()
        return None if row is None else row[0]

    def registrations(self, name: str | None = None) -> list[dict[str, Any]]:
        w = t.workflows.c
        query = sa.select(w.name, w.version, w.registered_at).order_by(w.name, w.registered_at.desc(), w.id.desc())
        if name is not None:
            query = query.where(w.name == name)
        return [dict(r._mapping, registered_at=aware(r.registered_at)) for r in self.c.execute(query)]

    # Runs

    def run_for_key(self, key: str) -> str | None:
        row = self.c.execute(sa.select(t.runs.c.id).where(t.runs.c.idempotency_key == key)).first()
        return None if row is None else row[0]

    def insert_run(
        self, run_id: str, workflow: str, version: str, inputs: Any, key: str | None, steps: Sequence[str]
    ) -> None:
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
            )
        )
        if steps:
            self.c.execute(
                t.step_runs.insert(),
                [
                    {"run_id": run_id, "step": s, "item_index": STEP_ROW, "status": StepStatus.PENDING, "attempts": 0}
                    for s in steps
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

    def runs(self, status: str | None, workflow: str | None, limit: int) -> list[RunRow]:
        query = sa.select(t.runs).order_by(t.runs.c.created_at.desc(), t.runs.c.id).limit(limit)
        if status:
            query = query.where(t.runs.c.status == status)
        if workflow:
            query = query.where(t.runs.c.workflow == workflow)
        return [RunRow.from_row(r) for r in self.c.execute(query)]

    def run_ids(self, statuses: Iterable[str]) -> list[str]:
        query = sa.select(t.runs.c.id).where(t.runs.c.status.in_(list(statuses)))
        return [r[0] for r in self.c.execute(query)]

    # Steps

    def steps(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, StepRow]:
        """The step rows (not items) of a run, all or by name."""
        s = t.step_runs.c
        if names is not None:
            wanted = list(names)
            if not wanted:
                return {}
            rows = self.c.execute(_STEPS_NAMED, {"run_id": run_id, "names": wanted})
            return {row.step: StepRow.from_row(row) for row in rows}
        query = sa.select(t.step_runs).where(s.run_id == run_id, s.item_index == STEP_ROW).order_by(s.id)
        return {row.step: StepRow.from_row(row) for row in self.c.execute(query)}

    def step_run(self, step_run_id: int, lock: bool = False) -> StepRow | None:
        query = sa.select(t.step_runs).where(t.step_runs.c.id == step_run_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.c.execute(query).first()
        return None if row is None else StepRow.from_row(row)

    def items(self, run_id: str, step: str | None = None) -> list[StepRow]:
        s = t.step_runs.c
        query = sa.select(t.step_runs).where(s.run_id == run_id, s.item_index != STEP_ROW)
        if step is not None:
            query = query.where(s.step == step)
        return [StepRow.from_row(r) for r in self.c.execute(query.order_by(s.step, s.item_index))]

    def claim(self, step_run_id: int, dispatch_id: str, worker: str, at: datetime) -> tuple[StepRow, str] | None:
        """Take a queued step for this delivery and record it; with the run's definition version.

        None when the step is not queued for this delivery (stale, duplicate or finished).
        """
        params = {"row_id": step_run_id, "dispatch": dispatch_id, "worker": worker, "at": at}
        if self.dialect == "postgresql":
            found = self.c.execute(_PG_CLAIM, params).first()
            if found is None:
                return None
            data = dict(found._mapping)
            version = data.pop("run_version")
            return StepRow.from_row(data), version
        found = self.c.execute(_CLAIM, params).first()
        if found is None:
            return None
        row = StepRow.from_row(found)
        detail = {"attempt": row.attempts, "worker": worker}
        self.add_events([event_row(row, "step.running", detail, at)])
        run = self.run(row.run_id)
        assert run is not None
        return row, run.version

    def finish(
        self,
        row: StepRow,
        owner: str,
        status: StepStatus,
        at: datetime,
        output: Any = None,
        error: str | None = None,
        traceback: str | None = None,
    ) -> bool:
        """End a running step owned by delivery ``owner``, and record the attempt; False if not owned."""
        if self.dialect == "postgresql":
            params = {
                "row_id": row.id,
                "owner": owner,
                "status": str(status),
                "output": output,
                "error": error,
                "traceback": traceback,
                "at": at,
            }
            return bool(self.c.execute(_PG_FINISH, params).scalar_one())
        if not self.finish_step_if(
            row.id, owner, status=status, output=output, error=error, traceback=traceback, finished_at=at
        ):
            return False
        self.record_attempt(row, status, error, at)
        return True

    def open_steps(self, run_id: str) -> int:
        """How many steps of a run have not ended (foreach items are counted by their step)."""
        return int(self.c.execute(_OPEN_STEPS, {"run_id": run_id}).scalar_one())

    def update_step(self, step_run_id: int, **values: Any) -> None:
        self.c.execute(t.step_runs.update().where(t.step_runs.c.id == step_run_id).values(**values))

    def finish_step_if(self, step_run_id: int, owner: str, **values: Any) -> bool:
        """Record a result only if delivery ``owner`` (a dispatch id) still owns the running step."""
        s = t.step_runs.c
        result = self.c.execute(
            t.step_runs.update()
            .where(s.id == step_run_id, s.dispatch_id == owner, s.status == StepStatus.RUNNING)
            .values(**values)
        )
        return result.rowcount == 1

    def insert_items(self, run_id: str, step: str, inputs: Sequence[Any]) -> None:
        self.c.execute(
            t.step_runs.insert(),
            [
                {
                    "run_id": run_id,
                    "step": step,
                    "item_index": i,
                    "status": StepStatus.PENDING,
                    "attempts": 0,
                    "inputs": value,
                }
                for i, value in enumerate(inputs)
            ],
        )

    def item_counts(self, run_id: str, step: str) -> dict[StepStatus, int]:
        s = t.step_runs.c
        query = (
            sa.select(s.status, sa.func.count())
            .where(s.run_id == run_id, s.step == step, s.item_index != STEP_ROW)
            .group_by(s.status)
        )
        return {StepStatus(status): count for status, count in self.c.execute(query)}

    def pending_items(self, run_id: str, step: str, limit: int) -> list[tuple[int, int]]:
        s = t.step_runs.c
        query = (
            sa.select(s.id, s.item_index)
            .where(s.run_id == run_id, s.step == step, s.item_index != STEP_ROW, s.status == StepStatus.PENDING)
            .order_by(s.item_index)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in self.c.execute(query)]

    def queue_many(self, queued: Sequence[tuple[int, str]], at: datetime) -> None:
        """Mark rows queued with their dispatch ids, in one round trip."""
        if not queued:
            return
        s = t.step_runs.c
        statement = (
            t.step_runs.update()
            .where(s.id == sa.bindparam("row_id"))
            .values(status=StepStatus.QUEUED, dispatch_id=sa.bindparam("dispatch"), queued_at=at)
        )
        self.c.execute(statement, [{"row_id": row_id, "dispatch": d} for row_id, d in queued])

    def item_results(self, run_id: str, step: str) -> list[tuple[StepStatus, Any, str | None]]:
        s = t.step_runs.c
        query = (
            sa.select(s.status, s.output, s.error)
            .where(s.run_id == run_id, s.step == step, s.item_index != STEP_ROW)
            .order_by(s.item_index)
        )
        return [(StepStatus(r[0]), r[1], r[2]) for r in self.c.execute(query)]

    def cancel_open(
        self, run_id: str, statuses: Iterable[StepStatus], keep: Iterable[str] = (), reason: str = ""
    ) -> list[tuple[int, str, int]]:
        """Cancel rows in ``statuses`` (except step rows named in ``keep``); (id, step, item) of each."""
        s = t.step_runs.c
        condition = sa.and_(s.run_id == run_id, s.status.in_([str(x) for x in statuses]))
        kept = list(keep)
        if kept:
            condition = sa.and_(condition, sa.not_(sa.and_(s.item_index == STEP_ROW, s.step.in_(kept))))
        found = self.c.execute(sa.select(s.id, s.step, s.item_index).where(condition)).all()
        if found:
            self.c.execute(
                t.step_runs.update()
                .where(s.id.in_([r[0] for r in found]))
                .values(status=StepStatus.CANCELLED, reason=reason, finished_at=now())
            )
        return [(r[0], r[1], r[2]) for r in found]

    # Attempts, events, workers

    def record_attempt(self, row: StepRow, status: StepStatus, error: str | None, at: datetime) -> None:
        """An attempt, once it has ended: number, outcome, error, worker, start and end."""
        self.c.execute(
            t.attempts.insert(),
            {
                "step_run_id": row.id,
                "number": row.attempts,
                "status": status,
                "error": error,
                "worker": row.worker,
                "started_at": row.started_at or at,
                "finished_at": at,
            },
        )

    def attempts(self, step_run_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not step_run_ids:
            return []
        a = t.attempts.c
        query = sa.select(t.attempts).where(a.step_run_id.in_(list(step_run_ids))).order_by(a.step_run_id, a.number)
        return [
            dict(r._mapping, started_at=aware(r.started_at), finished_at=aware(r.finished_at))
            for r in self.c.execute(query)
        ]

    def add_events(self, events: Sequence[dict[str, Any]]) -> None:
        if events:
            self.c.execute(t.events.insert(), list(events))

    def history(self, run_id: str) -> list[dict[str, Any]]:
        e = t.events.c
        query = sa.select(e.step, e.item_index, e.kind, e.detail, e.at).where(e.run_id == run_id).order_by(e.id)
        return [dict(r._mapping, at=aware(r.at)) for r in self.c.execute(query)]

    def heartbeat(self, name: str, at: datetime) -> None:
        if not insert_if_absent(self.c, t.workers, {"name": name, "started_at": at, "last_seen": at}):
            self.c.execute(t.workers.update().where(t.workers.c.name == name).values(last_seen=at))

    def worker_alive(self, name: str | None, cutoff: datetime) -> bool:
        if name is None:
            return False
        w = t.workers.c
        row = self.c.execute(sa.select(w.last_seen).where(w.name == name)).first()
        last_seen = aware(row[0]) if row else None
        return last_seen is not None and last_seen >= cutoff


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
                yield Tx(connection)

    @contextmanager
    def statements(self) -> Iterator[Tx]:
        """A ``Tx`` whose every statement commits by itself (PostgreSQL), for one-statement changes."""
        if self.engine.dialect.name != "postgresql":
            with self.transaction() as tx:
                yield tx
            return
        with self._errors():
            with get_engine(self._url_text, autocommit=True).connect() as connection:
                yield Tx(connection)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if "no such table" in reason or "does not exist" in reason:
                raise StateStoreError(
                    f"the state store at {self.url} has no orchestrator schema: run 'orchestrator db upgrade'"
                ) from exc
            raise StateStoreError(f"state store error at {self.url}: {reason}") from exc
