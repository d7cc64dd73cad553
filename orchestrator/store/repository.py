"""The repository: every read and write of run state goes through here, in explicit transactions.

``Repository.transaction()`` yields a ``Tx`` bound to one connection and one database
transaction; the scheduler does all of one "advance" inside a single ``Tx``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.errors import StateStoreError
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import tables as t
from orchestrator.store.database import check_reachable, get_engine, redact

STEP_ROW = -1  # item_index of a step's own row; foreach items are 0..n-1


def _event_row(row: StepRow, kind: str, detail: dict[str, Any] | None, at: datetime) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "step": row.step,
        "item_index": row.item_index if row.is_item else None,
        "kind": kind,
        "detail": detail,
        "at": at,
    }


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass
class RunRow:
    id: str
    workflow: str
    version: str
    status: RunStatus
    inputs: Any
    outputs: Any
    error: str | None
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> RunRow:
        data = dict(row._mapping)
        data["status"] = RunStatus(data["status"])
        for key in ("created_at", "started_at", "finished_at"):
            data[key] = aware(data[key])
        return cls(**data)


@dataclass
class StepRow:
    id: int
    run_id: str
    step: str
    item_index: int
    status: StepStatus
    attempts: int
    inputs: Any
    output: Any
    error: str | None
    traceback: str | None
    reason: str | None
    worker: str | None
    dispatch_id: str | None
    lost: int
    not_before: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any] | dict[str, Any]) -> StepRow:
        data = dict(row) if isinstance(row, dict) else dict(row._mapping)
        data["status"] = StepStatus(data["status"])
        for key in ("not_before", "queued_at", "started_at", "finished_at"):
            data[key] = aware(data[key])
        return cls(**data)

    @property
    def is_item(self) -> bool:
        return self.item_index != STEP_ROW


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


@dataclass
class DeadLetter:
    id: str
    run_id: str
    step_run_id: int
    workflow: str
    step: str
    item_index: int | None
    task: str
    inputs: Any
    error: str
    error_type: str
    traceback: str | None
    attempts: int
    status: str
    failed_at: datetime
    resolved_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> DeadLetter:
        data = dict(row._mapping)
        data["failed_at"] = aware(data["failed_at"])
        data["resolved_at"] = aware(data["resolved_at"])
        return cls(**data)


class Tx:
    """One transaction's worth of queries."""

    def __init__(self, connection: sa.Connection) -> None:
        self.c = connection
        self.dialect = connection.dialect.name

    # Definitions and registrations

    def save_definition(self, version: str, name: str, snapshot: dict[str, Any]) -> None:
        exists = self.c.execute(sa.select(t.definitions.c.version).where(t.definitions.c.version == version))
        if exists.first() is None:
            self.c.execute(
                t.definitions.insert().values(version=version, name=name, snapshot=snapshot, created_at=now())
            )

    def definition(self, version: str) -> dict[str, Any] | None:
        row = self.c.execute(sa.select(t.definitions.c.snapshot).where(t.definitions.c.version == version)).first()
        return None if row is None else row[0]

    def register(self, name: str, version: str) -> bool:
        """Register ``version`` under ``name``; False when it already was."""
        w = t.workflows.c
        found = self.c.execute(sa.select(w.id).where(w.name == name, w.version == version)).first()
        if found is not None:
            return False
        self.c.execute(t.workflows.insert().values(name=name, version=version, registered_at=now()))
        return True

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
        self.add_events([_event_row(row, "step.running", detail, at)])
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

    def stale_queued(self, cutoff: datetime, limit: int = 500) -> list[StepRow]:
        """Queued steps of running runs whose message should have been taken by ``cutoff``."""
        s, r = t.step_runs.c, t.runs.c
        due = sa.func.coalesce(s.not_before, s.queued_at)
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(s.status == StepStatus.QUEUED, r.status == RunStatus.RUNNING, due < cutoff)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=t.step_runs, skip_locked=True)
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def running_since(self, cutoff: datetime, limit: int = 500) -> list[StepRow]:
        """Steps a worker took before ``cutoff`` and still runs: candidates for a lost worker.

        A foreach step's own row is running while its items are; no worker owns it, so it is never
        a candidate (its items are).
        """
        s, r = t.step_runs.c, t.runs.c
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(
                s.status == StepStatus.RUNNING,
                r.status == RunStatus.RUNNING,
                s.started_at < cutoff,
                s.worker.is_not(None),
            )
            .limit(limit)
        )
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    def due_deferred(self, at: datetime, limit: int = 500) -> list[StepRow]:
        """Queued steps held in the database (no message sent) whose wake-up time has come."""
        s, r = t.step_runs.c, t.runs.c
        query = (
            sa.select(t.step_runs)
            .join(t.runs, r.id == s.run_id)
            .where(
                s.status == StepStatus.QUEUED,
                s.dispatch_id.is_(None),
                s.not_before <= at,
                r.status == RunStatus.RUNNING,
            )
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=t.step_runs, skip_locked=True)
        return [StepRow.from_row(row) for row in self.c.execute(query)]

    # Dead letters

    def insert_dead_letter(self, entry: dict[str, Any]) -> None:
        self.c.execute(t.dead_letters.insert().values(**entry))

    def dead_letter(self, entry_id: str, lock: bool = False) -> DeadLetter | None:
        query = sa.select(t.dead_letters).where(t.dead_letters.c.id == entry_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.c.execute(query).first()
        return None if row is None else DeadLetter.from_row(row)

    def dead_letters(
        self,
        status: str | None = None,
        workflow: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
        lock_open: bool = False,
        exclude: Sequence[str] = (),
    ) -> list[DeadLetter]:
        d = t.dead_letters.c
        query = sa.select(t.dead_letters).order_by(d.failed_at.desc(), d.id)
        for column, value in ((d.status, status), (d.workflow, workflow), (d.run_id, run_id)):
            if value is not None:
                query = query.where(column == value)
        if exclude:
            query = query.where(d.id.not_in(list(exclude)))
        if limit is not None:
            query = query.limit(limit)
        if lock_open and self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [DeadLetter.from_row(r) for r in self.c.execute(query)]

    def resolve_dead_letter(self, entry_id: str, status: str, at: datetime) -> bool:
        """Move an open entry to ``status``; False when it was not open any more."""
        d = t.dead_letters.c
        result = self.c.execute(
            t.dead_letters.update().where(d.id == entry_id, d.status == "open").values(status=status, resolved_at=at)
        )
        return result.rowcount == 1

    def purge_dead_letters(self, before: datetime, include_open: bool) -> int:
        d = t.dead_letters.c
        condition = d.failed_at < before
        if not include_open:
            condition = sa.and_(condition, d.status != "open")
        return self.c.execute(t.dead_letters.delete().where(condition)).rowcount

    def reopen_steps(self, run_id: str, reasons: Sequence[str]) -> list[tuple[int, str, int]]:
        """Put back to pending the rows a failure ended without running them; (id, step, item) of each."""
        s = t.step_runs.c
        ended_by_failure = sa.or_(
            sa.and_(s.status == StepStatus.CANCELLED, s.reason.in_(list(reasons))),
            sa.and_(s.status == StepStatus.SKIPPED, sa.or_(s.reason.like("need %"), s.reason == "no need succeeded")),
        )
        found = self.c.execute(sa.select(s.id, s.step, s.item_index).where(s.run_id == run_id, ended_by_failure)).all()
        if found:
            self.c.execute(
                t.step_runs.update()
                .where(s.id.in_([r[0] for r in found]))
                .values(status=StepStatus.PENDING, reason=None, finished_at=None, dispatch_id=None)
            )
        return [(r[0], r[1], r[2]) for r in found]

    def lock_runs(self, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """Several runs, locked in id order (the same order everywhere, so no deadlock)."""
        query = sa.select(t.runs).where(t.runs.c.id.in_(sorted(run_ids))).order_by(t.runs.c.id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return {row.id: RunRow.from_row(row) for row in self.c.execute(query)}

    def resolve_dead_letters(self, entry_ids: Sequence[str], status: str, at: datetime) -> None:
        d = t.dead_letters.c
        self.c.execute(
            t.dead_letters.update()
            .where(d.id.in_(list(entry_ids)), d.status == "open")
            .values(status=status, resolved_at=at)
        )

    def reopen_steps_of(self, run_ids: Sequence[str], reasons: Sequence[str]) -> list[tuple[str, str, int]]:
        """``reopen_steps`` for many runs at once; (run, step, item) of each row put back."""
        s = t.step_runs.c
        ended_by_failure = sa.or_(
            sa.and_(s.status == StepStatus.CANCELLED, s.reason.in_(list(reasons))),
            sa.and_(s.status == StepStatus.SKIPPED, sa.or_(s.reason.like("need %"), s.reason == "no need succeeded")),
        )
        statement = (
            t.step_runs.update()
            .where(s.run_id.in_(list(run_ids)), ended_by_failure)
            .values(status=StepStatus.PENDING, reason=None, finished_at=None, dispatch_id=None)
        )
        if self.dialect in ("postgresql", "sqlite"):
            rows = self.c.execute(statement.returning(s.run_id, s.step, s.item_index)).all()
            return [(r[0], r[1], r[2]) for r in rows]
        raise NotImplementedError(self.dialect)

    def requeue_many(self, rows: Sequence[tuple[int, Any, str]], at: datetime) -> None:
        """Failed rows back in the queue with their inputs and a new dispatch token, in one round trip."""
        if not rows:
            return
        s = t.step_runs.c
        statement = (
            t.step_runs.update()
            .where(s.id == sa.bindparam("row_id"))
            .values(
                status=StepStatus.QUEUED,
                inputs=sa.bindparam("new_inputs", type_=t.Json),
                dispatch_id=sa.bindparam("dispatch"),
                queued_at=at,
                error=None,
                traceback=None,
                finished_at=None,
                not_before=None,
                lost=0,
            )
        )
        self.c.execute(statement, [{"row_id": r, "new_inputs": i, "dispatch": d} for r, i, d in rows])

    def first_failures(self, run_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Each run's earliest still-failed step: (step, error)."""
        s = t.step_runs.c
        query = (
            sa.select(s.run_id, s.step, s.error)
            .where(s.run_id.in_(list(run_ids)), s.status == StepStatus.FAILED, s.item_index == STEP_ROW)
            .order_by(s.finished_at)
        )
        found: dict[str, tuple[str, str | None]] = {}
        for run_id, step, error in self.c.execute(query):
            found.setdefault(run_id, (step, error))
        return found

    def resume_runs(self, run_ids: Sequence[str], error: str | None = None) -> None:
        if run_ids:
            self.c.execute(
                t.runs.update()
                .where(t.runs.c.id.in_(list(run_ids)))
                .values(status=RunStatus.RUNNING, error=error, outputs=None, finished_at=None)
            )

    def failed_steps(self, run_id: str) -> list[StepRow]:
        s = t.step_runs.c
        query = sa.select(t.step_runs).where(s.run_id == run_id, s.status == StepStatus.FAILED).order_by(s.finished_at)
        return [StepRow.from_row(r) for r in self.c.execute(query)]

    # Circuit breakers (when no Redis holds them)

    def breaker(self, name: str) -> dict[str, Any]:
        b = t.breakers.c
        row = self.c.execute(sa.select(t.breakers).where(b.name == name)).first()
        if row is None:
            return {
                "name": name,
                "state": "closed",
                "failures": 0,
                "opened_at": None,
                "next_trial_at": None,
                "trial_until": None,
            }
        data = dict(row._mapping)
        for key in ("opened_at", "next_trial_at", "trial_until"):
            data[key] = aware(data[key])
        return data

    def update_breaker(self, name: str, **values: Any) -> None:
        b = t.breakers.c
        if self.c.execute(t.breakers.update().where(b.name == name).values(**values)).rowcount == 0:
            row = {"name": name, "state": "closed", "failures": 0, **values}
            self.c.execute(t.breakers.insert().values(**row))

    def add_breaker_failure(self, name: str) -> None:
        b = t.breakers.c
        if self.c.execute(t.breakers.update().where(b.name == name).values(failures=b.failures + 1)).rowcount == 0:
            self.c.execute(t.breakers.insert().values(name=name, state="closed", failures=1))

    def take_breaker_trial(self, name: str, until: datetime) -> bool:
        """Claim the one half-open trial: true for exactly one caller until ``until`` passes."""
        b = t.breakers.c
        free = sa.or_(b.trial_until.is_(None), b.trial_until < now())
        result = self.c.execute(t.breakers.update().where(b.name == name, free).values(trial_until=until))
        return result.rowcount == 1

    def breaker_names(self) -> list[str]:
        return [r[0] for r in self.c.execute(sa.select(t.breakers.c.name).order_by(t.breakers.c.name))]

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
        w = t.workers.c
        updated = self.c.execute(t.workers.update().where(w.name == name).values(last_seen=at))
        if updated.rowcount == 0:
            self.c.execute(t.workers.insert().values(name=name, started_at=at, last_seen=at))

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
