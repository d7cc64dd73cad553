"""Step rows and foreach items: claims, results, queueing, cancelling, and the counts the scheduler needs.

Every query a completion makes touches a bounded number of rows: open items and open steps are
found through partial indexes, a join's readiness through its ``needs_open`` counter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.status import StepStatus
from orchestrator.store import tables as t
from orchestrator.store.clock import db_later
from orchestrator.store.rows import STEP_ROW, RunRow, StepRow, aware, event_row

_s = t.step_runs.c

# The partial indexes' own predicates, written as constants: a prepared statement's generic plan can
# use a partial index only when the query's conditions prove its predicate without parameters.
_PENDING_ITEM = sa.text("step_runs.item_index >= 0 AND step_runs.status = 'pending'")
_ACTIVE_ITEM = sa.text("step_runs.item_index >= 0 AND step_runs.status IN ('queued', 'running', 'waiting')")
_OPEN_STEP_ROW = sa.text(
    "step_runs.item_index = -1 AND step_runs.status IN ('pending', 'queued', 'running', 'waiting')"
)
_STEPS_NAMED = (
    sa.select(t.step_runs)
    .where(
        _s.run_id == sa.bindparam("run_id"),
        _s.item_index == STEP_ROW,
        _s.step.in_(sa.bindparam("names", expanding=True)),
    )
    .order_by(_s.id)
)
_PAUSED_RUN = sa.select(t.runs.c.id).where(t.runs.c.id == _s.run_id, t.runs.c.status == "paused").exists()
_OPEN_STEP = sa.select(_s.id).where(_s.run_id == sa.bindparam("run_id"), _OPEN_STEP_ROW).limit(1)

# Statements that change one step by id test its status as ``status || ''``, which no index can
# answer: on a table without statistics (a new database, autovacuum off) PostgreSQL would otherwise
# read the step through the (status, queued_at) index, every queued step of every run, per claim.

# PostgreSQL: a claim and its event in one statement, so it needs no explicit transaction. A claim
# takes a queued step for its message; or, ``pending``, a step its run just made ready, in place of
# queueing it (its inputs written with it). ``logging`` also writes the events the transaction has
# buffered, in order, before the claim's own.
_CLAIM_WHERE = {
    False: "dispatch_id = :dispatch AND status || '' = 'queued'",
    True: "status || '' = 'pending'",
}
_CLAIM_SET = {False: "", True: "inputs = CAST(:inputs AS jsonb), queued_at = :at,"}
_RUNNING_EVENT = """SELECT {n} run_id, step, CASE WHEN item_index = -1 THEN NULL ELSE item_index END, 'step.running',
           jsonb_build_object('attempt', attempts, 'worker', worker), CAST(:at AS timestamptz)
    FROM claimed"""
_BUFFERED_EVENTS = (
    """SELECT run_id, step, item_index, kind, detail, at FROM (
        SELECT e.n, e.run_id, e.step, e.item_index, e.kind, e.detail, e.at
        FROM jsonb_to_recordset(CAST(:events AS jsonb))
             AS e(n int, run_id text, step text, item_index int, kind text, detail jsonb, at timestamptz)
        UNION ALL
        """
    + _RUNNING_EVENT.format(n="2147483647,")
    + """
    ) AS pending ORDER BY n"""
)


def _claim_statement(pending: bool, logging: bool) -> sa.TextClause:
    return sa.text(f"""
WITH claimed AS (
    UPDATE step_runs SET status = 'running', attempts = attempts + 1, worker = :worker, worker_id = :worker_id,
           started_at = :at, error = NULL, dispatch_id = :token, {_CLAIM_SET[pending]}
           lease_expires_at = statement_timestamp() + make_interval(secs => :lease_s)
    WHERE id = :row_id AND {_CLAIM_WHERE[pending]}
      AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = step_runs.run_id AND runs.status = 'paused')
    RETURNING *
), logged AS (
    INSERT INTO events (run_id, step, item_index, kind, detail, at)
    {_BUFFERED_EVENTS if logging else _RUNNING_EVENT.format(n="")}
)
SELECT claimed.*, runs.version AS run_version FROM claimed JOIN runs ON runs.id = claimed.run_id
""")


_PG_CLAIMS = {
    (pending, logging): _claim_statement(pending, logging) for pending in (False, True) for logging in (False, True)
}

# PostgreSQL: a step's end and its attempt record in one statement. The attempt number fences the
# write: a holder whose lease lapsed and whose step was taken over records nothing.
_PG_FINISH = sa.text("""
WITH done AS (
    UPDATE step_runs SET status = :status, output = :output, error = :error, traceback = :traceback,
           finished_at = :at, lease_expires_at = NULL
    WHERE id = :row_id AND dispatch_id = :owner AND attempts = :attempt AND status || '' = 'running'
    RETURNING id, attempts, worker, started_at
), tried AS (
    INSERT INTO attempts (step_run_id, number, status, error, worker, started_at, finished_at)
    SELECT id, attempts, :status, :error, worker, started_at, :at FROM done
)
SELECT count(*) FROM done
""").bindparams(sa.bindparam("output", type_=t.Json))


# PostgreSQL: the run's lock, then the step's end and its attempt, and one need counted down in each
# of its dependents, in one round trip. Each change is gated on the one before it (the step changes
# only if the run exists, the dependents only if the step ended), so whatever order PostgreSQL runs
# the parts in, the run row is locked before any step row, as every writer locks them.
_DEPENDENT = [c.name for c in t.step_runs.c]
_FINISH_LOCKED = """
WITH run AS (
    SELECT * FROM runs WHERE id = :run_id FOR UPDATE
), done AS (
    UPDATE step_runs SET status = :status, output = :output, error = NULL, traceback = NULL,
           finished_at = :at, lease_expires_at = NULL
    WHERE id = :row_id AND dispatch_id = :owner AND attempts = :attempt AND status || '' = 'running'
      AND EXISTS (SELECT 1 FROM run)
    RETURNING id, attempts, worker, started_at
), tried AS (
    INSERT INTO attempts (step_run_id, number, status, error, worker, started_at, finished_at)
    SELECT id, attempts, :status, NULL, worker, started_at, :at FROM done
), counted AS (
    UPDATE step_runs SET needs_open = needs_open - 1
    WHERE run_id = :run_id AND {dependents} AND item_index = :step_row AND EXISTS (SELECT 1 FROM done)
    RETURNING *
)
SELECT run.*, (SELECT count(*) FROM done) AS step_finished, {columns}
FROM run LEFT JOIN counted ON true
"""
# One dependent (a chain) is found by equality, which the planner always reads through the unique
# (run_id, step, item_index) index; ``item_index`` is a parameter, not a constant, so no partial index
# of open steps (every open step of the run) is chosen instead.
_PG_FINISH_LOCKED = {
    many: sa.text(
        _FINISH_LOCKED.format(
            dependents="step = ANY(CAST(:dependents AS text[]))" if many else "step = :dependent",
            columns=", ".join(f"counted.{c} AS dep_{c}" for c in _DEPENDENT),
        )
    ).bindparams(sa.bindparam("output", type_=t.Json))
    for many in (False, True)
}

_NEED_ENDED = (
    t.step_runs.update()
    .where(
        _s.run_id == sa.bindparam("of_run"),
        _s.item_index == STEP_ROW,
        _s.step.in_(sa.bindparam("names", expanding=True)),
    )
    .values(needs_open=_s.needs_open - 1)
    .returning(*t.step_runs.c)
)
_QUEUE = (
    t.step_runs.update()
    .where(_s.id == sa.bindparam("row_id"))
    .values(
        status=StepStatus.QUEUED,
        inputs=sa.bindparam("inputs", type_=t.Json),
        dispatch_id=sa.bindparam("dispatch"),
        queued_at=sa.bindparam("at"),
    )
)


def _probe(state: sa.TextClause) -> sa.Exists:
    of_step = sa.and_(_s.run_id == sa.bindparam("of_run"), _s.step == sa.bindparam("of_step"))
    return sa.select(_s.id).where(of_step, state).exists()


_ACTIVE_ITEMS = sa.select(_probe(_ACTIVE_ITEM))
_OPEN_ITEMS = sa.select(sa.or_(_probe(_PENDING_ITEM), _probe(_ACTIVE_ITEM)))


@dataclass(frozen=True)
class Ended:
    """A row a set-based statement just ended (cancelled): enough to log it and revoke its message."""

    id: int
    step: str
    item_index: int
    dispatch_id: str | None
    worker: str | None
    attempts: int
    started_at: datetime | None
    wait_kind: str | None = None
    wait_key: str | None = None

    @property
    def is_item(self) -> bool:
        return self.item_index != STEP_ROW


class StepQueries:
    """Step rows and items (a part of ``Tx``)."""

    c: sa.Connection
    dialect: str
    _counted: tuple[str, tuple[str, ...], list[StepRow]] | None = None

    def add_events(self, events: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError  # provided by Tx

    def lock_run(self, run_id: str) -> RunRow | None:
        raise NotImplementedError  # provided by Tx

    def take_events(self) -> list[dict[str, Any]]:
        raise NotImplementedError  # provided by Tx

    def steps(self, run_id: str, names: Iterable[str] | None = None) -> dict[str, StepRow]:
        """The step rows (not items) of a run, all or by name."""
        if names is not None:
            wanted = list(names)
            if not wanted:
                return {}
            rows = self.c.execute(_STEPS_NAMED, {"run_id": run_id, "names": wanted})
            return {row.step: StepRow.from_row(row) for row in rows}
        query = sa.select(t.step_runs).where(_s.run_id == run_id, _s.item_index == STEP_ROW).order_by(_s.id)
        return {row.step: StepRow.from_row(row) for row in self.c.execute(query)}

    def step_run(self, step_run_id: int, lock: bool = False) -> StepRow | None:
        query = sa.select(t.step_runs).where(_s.id == step_run_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        row = self.c.execute(query).first()
        return None if row is None else StepRow.from_row(row)

    def items(self, run_id: str, step: str | None = None) -> list[StepRow]:
        query = sa.select(t.step_runs).where(_s.run_id == run_id, _s.item_index != STEP_ROW)
        if step is not None:
            query = query.where(_s.step == step)
        return [StepRow.from_row(r) for r in self.c.execute(query.order_by(_s.step, _s.item_index))]

    def claim(
        self,
        step_run_id: int,
        dispatch_id: str,
        worker_id: int,
        worker: str,
        lease_s: float,
        at: datetime,
        token: str | None = None,
        *,
        pending: bool = False,
        inputs: Any = None,
    ) -> tuple[StepRow, str] | None:
        """Take a queued step for this delivery under a lease, and log it; with the run's definition
        version. None when the step is not queued for this delivery (stale, duplicate or finished)
        or its run is paused. ``token``: the dispatch token it runs under from now on (default: the
        delivery's), the id of the Celery message whose execution runs it, which revoking stops.
        ``pending``: take a pending step its run just made ready instead of queueing it, with its
        ``inputs`` (``dispatch_id`` is then the token it would have been sent with, unused)."""
        token = token or dispatch_id
        params: dict[str, Any] = {
            "row_id": step_run_id,
            "dispatch": dispatch_id,
            "token": token,
            "worker": worker,
            "worker_id": worker_id,
            "at": at,
            "lease_s": float(lease_s),
        }
        if self.dialect == "postgresql":
            events = self.take_events()
            if events:
                params["events"] = json.dumps([{**e, "n": n, "at": e["at"].isoformat()} for n, e in enumerate(events)])
            if pending:
                params["inputs"] = json.dumps(inputs)
            found = self.c.execute(_PG_CLAIMS[pending, bool(events)], params).first()
            if found is None:
                return None
            data = dict(found._mapping)
            version = data.pop("run_version")
            return StepRow.from_row(data), version
        status = StepStatus.PENDING if pending else StepStatus.QUEUED
        condition = sa.and_(_s.id == step_run_id, _s.status == status, ~_PAUSED_RUN)
        values: dict[str, Any] = {
            "status": StepStatus.RUNNING,
            "attempts": _s.attempts + 1,
            "worker": worker,
            "worker_id": worker_id,
            "started_at": at,
            "error": None,
            "dispatch_id": token,
            "lease_expires_at": db_later(self.dialect, lease_s),
        }
        if pending:
            values.update(inputs=inputs, queued_at=at)
        else:
            condition = sa.and_(condition, _s.dispatch_id == dispatch_id)
        found = self.c.execute(t.step_runs.update().where(condition).values(**values).returning(*t.step_runs.c)).first()
        if found is None:
            return None
        row = StepRow.from_row(found)
        self.add_events([event_row(row, "step.running", {"attempt": row.attempts, "worker": worker}, at)])
        version = self.c.execute(sa.select(t.runs.c.version).where(t.runs.c.id == row.run_id)).scalar_one()
        return row, version

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
        """End a running step still held by this delivery and attempt, and record the attempt."""
        if self.dialect == "postgresql":
            params = {
                "row_id": row.id,
                "owner": owner,
                "attempt": row.attempts,
                "status": str(status),
                "output": output,
                "error": error,
                "traceback": traceback,
                "at": at,
            }
            return bool(self.c.execute(_PG_FINISH, params).scalar_one())
        values = {"output": output, "error": error, "traceback": traceback, "finished_at": at}
        if not self.finish_step_if(row, owner, status=status, lease_expires_at=None, **values):
            return False
        self.record_attempt(row, status, error, at)
        return True

    def finish_locked(
        self, row: StepRow, owner: str, at: datetime, output: Any, dependents: Sequence[str] = ()
    ) -> tuple[RunRow | None, bool]:
        """Lock the step's run, then end the step as succeeded if this delivery and attempt still
        hold it, recording the attempt: the run (None if gone) and whether the step was ended.
        With ``dependents`` (PostgreSQL), their needs are counted down in the same round trip, and
        the next ``need_ended`` for them returns those rows instead of counting again."""
        if self.dialect != "postgresql":
            run = self.lock_run(row.run_id)
            return run, run is not None and self.finish(row, owner, StepStatus.SUCCEEDED, at, output=output)
        params = {
            "run_id": row.run_id,
            "row_id": row.id,
            "owner": owner,
            "attempt": row.attempts,
            "status": str(StepStatus.SUCCEEDED),
            "output": output,
            "at": at,
            "dependents": list(dependents),
            "dependent": dependents[0] if dependents else "",
            "step_row": STEP_ROW,
        }
        found = self.c.execute(_PG_FINISH_LOCKED[len(dependents) != 1], params).all()
        if not found:
            return None, False
        first = found[0]._mapping
        run = RunRow.from_row({k: v for k, v in first.items() if not k.startswith("dep_") and k != "step_finished"})
        ended = bool(first["step_finished"])
        if ended and dependents:
            counted = [
                StepRow.from_row({c: r._mapping[f"dep_{c}"] for c in _DEPENDENT})
                for r in found
                if r._mapping["dep_id"] is not None  # no dependent row matched: the LEFT JOIN's NULLs
            ]
            self._counted = (row.run_id, tuple(dependents), counted)
        return run, ended

    def queue(self, queued: Sequence[tuple[int, Any, str]], at: datetime) -> None:
        """Steps sent to workers: each queued with its inputs and its message's token (row id,
        inputs, token), in one round trip."""
        if queued:
            params = [{"row_id": r, "inputs": inputs, "dispatch": d, "at": at} for r, inputs, d in queued]
            self.c.execute(_QUEUE, params)

    def finish_cached(self, row: StepRow, owner: str, at: datetime, output: Any) -> bool:
        """End a running step with an output from the cache: it succeeded with no attempt (the
        claim's is given back) and no attempt record."""
        return self.finish_step_if(
            row,
            owner,
            status=StepStatus.SUCCEEDED,
            output=output,
            finished_at=at,
            lease_expires_at=None,
            attempts=row.attempts - 1,
            cached=True,
        )

    def finish_step_if(self, row: StepRow, owner: str, **values: Any) -> bool:
        """Change a running step only if this delivery (dispatch id) and attempt still hold it."""
        result = self.c.execute(
            t.step_runs.update()
            .where(
                _s.id == row.id,
                _s.dispatch_id == owner,
                _s.attempts == row.attempts,
                _s.status == StepStatus.RUNNING,
            )
            .values(**values)
        )
        return result.rowcount == 1

    def hold_back(self, step_run_id: int, dispatch_id: str, at: datetime) -> bool:
        """A queued step of a paused run keeps its inputs and its place, its message spent: it is
        held in the store, due now, and resuming the run sends it again."""
        statement = (
            t.step_runs.update()
            .where(_s.id == step_run_id, _s.dispatch_id == dispatch_id, _s.status == StepStatus.QUEUED)
            .values(dispatch_id=None, not_before=at)
        )
        return self.c.execute(statement).rowcount == 1

    def retire_items(self, run_id: str, step: str, reason: str) -> None:
        """The ended items of a step a person skipped or accepted keep their status, but no repair
        reopens them any more (their step is settled)."""
        self.c.execute(
            t.step_runs.update()
            .where(_s.run_id == run_id, _s.step == step, _s.item_index >= 0, _s.status == StepStatus.CANCELLED)
            .values(reason=reason)
        )

    def update_step(self, step_run_id: int, **values: Any) -> None:
        self.c.execute(t.step_runs.update().where(_s.id == step_run_id).values(**values))

    def has_active_steps(self, run_id: str) -> bool:
        """Whether any step or item of the run is queued or running (work a worker holds or will)."""
        query = sa.select(_s.id).where(_s.run_id == run_id, _s.status.in_(["queued", "running"])).limit(1)
        return self.c.execute(query).first() is not None

    def has_open_steps(self, run_id: str) -> bool:
        """Whether any step of the run (foreach items are counted by their step) has not ended."""
        return self.c.execute(_OPEN_STEP, {"run_id": run_id}).first() is not None

    def step_statuses(self, run_id: str) -> dict[str, StepStatus]:
        query = sa.select(_s.step, _s.status).where(_s.run_id == run_id, _s.item_index == STEP_ROW)
        return {step: StepStatus(status) for step, status in self.c.execute(query)}

    def need_ended(self, run_id: str, dependents: Sequence[str]) -> list[StepRow]:
        """One need of each of ``dependents`` has ended: count it down; the dependents' rows."""
        counted, self._counted = self._counted, None
        if counted is not None and counted[:2] == (run_id, tuple(dependents)):
            return counted[2]  # counted down already, by the statement that ended the need
        rows = self.c.execute(_NEED_ENDED, {"of_run": run_id, "names": list(dependents)})
        return [StepRow.from_row(r) for r in rows]

    def set_needs_open(self, counts: Mapping[int, int]) -> None:
        if counts:
            statement = t.step_runs.update().where(_s.id == sa.bindparam("row_id")).values(needs_open=sa.bindparam("n"))
            self.c.execute(statement, [{"row_id": k, "n": v} for k, v in counts.items()])

    # State machine visits

    def insert_visit(self, run_id: str, step: str) -> StepRow:
        """A new pending row for one visit of a state (its name says which: ``review#2``)."""
        values = {"run_id": run_id, "step": step, "item_index": STEP_ROW, "status": StepStatus.PENDING, "attempts": 0}
        row = self.c.execute(t.step_runs.insert().values(**values).returning(*t.step_runs.c)).one()
        return StepRow.from_row(row)

    def current_row(self, run_id: str, step: str) -> StepRow | None:
        """The step's row; for a state of a state machine, its latest visit (``review``, ``review#2``...)."""
        pattern = step.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%"
        query = (
            sa.select(t.step_runs)
            .where(
                _s.run_id == run_id,
                _s.item_index == STEP_ROW,
                sa.or_(_s.step == step, _s.step.like(pattern, escape="\\")),
            )
            .order_by(_s.id.desc())
            .limit(1)
        )
        row = self.c.execute(query).first()
        return None if row is None else StepRow.from_row(row)

    def visits(self, run_id: str) -> list[StepRow]:
        """Every visit row of a state machine run, in the order they were made."""
        query = sa.select(t.step_runs).where(_s.run_id == run_id, _s.item_index == STEP_ROW).order_by(_s.id)
        return [StepRow.from_row(r) for r in self.c.execute(query)]

    # Foreach items

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

    def items_in_flight(self, run_id: str, step: str) -> tuple[int, int | None]:
        """Queued, running and waiting items of a foreach step (bounded by its concurrency): how
        many, and the highest index among them."""
        query = sa.select(sa.func.count(), sa.func.max(_s.item_index)).where(
            _s.run_id == run_id, _s.step == step, _ACTIVE_ITEM
        )
        count, highest = self.c.execute(query).one()
        return int(count), highest

    def has_open_items(self, run_id: str, step: str, pending: bool = True) -> bool:
        """Whether any item of the step is pending, queued, running or waiting: probes of two small
        indexes in one round trip (``pending=False``: only the active ones; the caller has just
        seen, under the run's lock, that none is pending)."""
        params = {"of_run": run_id, "of_step": step}
        return bool(self.c.execute(_OPEN_ITEMS if pending else _ACTIVE_ITEMS, params).scalar_one())

    def pending_items(
        self, run_id: str, step: str, limit: int | None, above: int | None = None
    ) -> list[tuple[int, int]]:
        """Pending items, lowest index first, at most ``limit``. With ``above`` (the highest index in
        flight), those past it are looked for first: items start in index order, so the index
        entries below it are of items that started long ago, dead row versions a scan from the
        start would step over on every refill until vacuum removes them. Only if those are too
        few (the end of the list, or items a repair reopened) is the whole range read."""
        query = (
            sa.select(_s.id, _s.item_index)
            .where(_s.run_id == run_id, _s.step == step, _PENDING_ITEM)
            .order_by(_s.item_index)
        )
        if limit is not None:
            query = query.limit(limit)
        if above is not None and limit is not None:
            found = [(r[0], r[1]) for r in self.c.execute(query.where(_s.item_index > above))]
            if len(found) == limit:
                return found
        return [(r[0], r[1]) for r in self.c.execute(query)]

    def queue_many(self, queued: Sequence[tuple[int, str]], at: datetime) -> None:
        """Mark rows queued with their dispatch ids, in one round trip."""
        if not queued:
            return
        statement = (
            t.step_runs.update()
            .where(_s.id == sa.bindparam("row_id"))
            .values(status=StepStatus.QUEUED, dispatch_id=sa.bindparam("dispatch"), queued_at=at)
        )
        self.c.execute(statement, [{"row_id": row_id, "dispatch": d} for row_id, d in queued])

    def item_results(self, run_id: str, step: str) -> list[tuple[StepStatus, Any, str | None]]:
        query = (
            sa.select(_s.status, _s.output, _s.error)
            .where(_s.run_id == run_id, _s.step == step, _s.item_index != STEP_ROW)
            .order_by(_s.item_index)
        )
        return [(StepStatus(r[0]), r[1], r[2]) for r in self.c.execute(query)]

    # Ending many rows at once

    def cancel_where(
        self,
        run_id: str,
        statuses: Iterable[StepStatus],
        reason: str,
        keep: Iterable[str] = (),
        *,
        at: datetime,
        step: str | None = None,
        items_only: bool = False,
    ) -> list[Ended]:
        """Cancel the run's rows in ``statuses`` (but the steps named in ``keep`` and their items) in
        one statement, so a row that changes status meanwhile is judged by its new status."""
        condition = sa.and_(_s.run_id == run_id, _s.status.in_([str(x) for x in statuses]))
        if step is not None:
            condition = sa.and_(condition, _s.step == step)
        if items_only:
            condition = sa.and_(condition, _s.item_index >= 0)
        kept = list(keep)
        if kept:
            condition = sa.and_(condition, _s.step.not_in(kept))
        statement = (
            t.step_runs.update()
            .where(condition)
            .values(status=StepStatus.CANCELLED, reason=reason, finished_at=at, lease_expires_at=None)
            .returning(
                _s.id,
                _s.step,
                _s.item_index,
                _s.dispatch_id,
                _s.worker,
                _s.attempts,
                _s.started_at,
                _s.wait_kind,
                _s.wait_key,
            )
        )
        return [
            Ended(r[0], r[1], r[2], r[3], r[4], r[5], aware(r[6]), r[7], r[8])
            for r in sorted(self.c.execute(statement), key=lambda r: (r[1], r[2]))
        ]

    # Attempts

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

    def record_ended_attempts(self, ended: Sequence[Ended], status: StepStatus, error: str, at: datetime) -> None:
        if ended:
            self.c.execute(
                t.attempts.insert(),
                [
                    {
                        "step_run_id": e.id,
                        "number": e.attempts,
                        "status": status,
                        "error": error,
                        "worker": e.worker,
                        "started_at": e.started_at or at,
                        "finished_at": at,
                    }
                    for e in ended
                ],
            )

    def attempts(self, step_run_ids: Sequence[int] | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Attempts of the given step rows, or of every step and item of a run (one join, however
        many items: no list of ids that could pass a statement's parameter limit)."""
        a = t.attempts.c
        query = sa.select(t.attempts).order_by(a.step_run_id, a.number)
        if run_id is not None:
            query = query.join(t.step_runs, _s.id == a.step_run_id).where(_s.run_id == run_id)
        elif step_run_ids:
            query = query.where(a.step_run_id.in_(list(step_run_ids)))
        else:
            return []
        return [
            dict(r._mapping, started_at=aware(r.started_at), finished_at=aware(r.finished_at))
            for r in self.c.execute(query)
        ]
