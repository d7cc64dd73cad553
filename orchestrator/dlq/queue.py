"""Dead-letter operations. An entry is written by the dead-letter middleware, in the same
transaction that fails its step for good; here people list, replay, discard and purge them.

Replaying locks the entries before their runs, so one entry replayed twice, even at the same moment,
gives exactly one new attempt: the second replay finds the entry already replayed. Naming several
entries is all or nothing: one that cannot be replayed refuses the whole command.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator import audit
from orchestrator.definition.plan import COMPENSATE_PREFIX
from orchestrator.errors import DeadLetterError, DeadLetterNotFound, DeadLetterRefused, NotFound, UsageError
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Reopen, Who, reopen
from orchestrator.runtime.views import iso
from orchestrator.settings import DEFAULT_DLQ_BATCH, DEFAULT_SERVICE_ACTOR
from orchestrator.status import RunStatus
from orchestrator.store import DeadLetter, Repository, RunRow, Tx, now

STATUSES = ("open", "replayed", "discarded", "resolved")


@dataclass
class Replayed:
    entries: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    sent: int = 0

    def merge(self, other: Replayed) -> None:
        self.entries += other.entries
        self.runs += other.runs
        self.refused += other.refused
        self.sent += other.sent

    def as_json(self) -> dict[str, Any]:
        """``dlq replay --json``: the entries replayed, the runs resumed (once each), those refused."""
        return {"replayed": self.entries, "runs": list(dict.fromkeys(self.runs)), "refused": self.refused}


def entry_view(entry: DeadLetter, full: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": entry.id,
        "run_id": entry.run_id,
        "workflow": entry.workflow,
        "step": entry.step,
        "item_index": entry.item_index,
        "task": entry.task,
        "inputs": entry.inputs,
        "error": entry.error,
        "attempts": entry.attempts,
        "status": entry.status,
        "failed_at": iso(entry.failed_at),
    }
    if full:
        view.update(error_type=entry.error_type, traceback=entry.traceback, resolved_at=iso(entry.resolved_at))
    return view


def list_entries(repo: Repository, status: str | None, workflow: str | None, limit: int) -> list[dict[str, Any]]:
    with repo.transaction() as tx:
        return [entry_view(e) for e in tx.dead_letters(status, workflow, limit=limit)]


def show(repo: Repository, entry_id: str) -> dict[str, Any]:
    with repo.transaction() as tx:
        entry = tx.dead_letter(entry_id)
    if entry is None:
        raise NotFound(f"no dead-letter entry {entry_id}")
    return entry_view(entry, full=True)


def replay(
    engine: Engine, entry_ids: Sequence[str], inputs: dict[str, Any] | None = None, who: Who | None = None
) -> Replayed:
    """Replay named entries: each re-executes its step (with corrected ``inputs`` if given) and
    resumes its run, then the step messages are sent. All or nothing: an entry that does not
    exist, is not open, or whose run was cancelled refuses the whole replay."""
    with engine.repo.transaction() as tx:
        entries = []
        for entry_id in sorted(set(entry_ids)):
            entry = tx.dead_letter(entry_id, lock=True)
            if entry is None:
                raise DeadLetterNotFound(f"no dead-letter entry {entry_id}")
            if entry.status != "open":
                raise DeadLetterRefused(f"dead-letter entry {entry_id} was already {entry.status}; nothing to replay")
            entries.append(entry)
        done, dispatches = _replay_batch(engine, tx, entries, inputs, who)
        if done.refused:
            entry = next(e for e in entries if e.id == done.refused[0])
            raise DeadLetterRefused(
                f"dead-letter entry {entry.id} belongs to run {entry.run_id}, which was cancelled; "
                "a cancelled run is not replayed"
            )
    engine.send(dispatches)
    done.sent = len(dispatches)
    return done


def check_selection(entry_ids: Sequence[str], every: bool, corrected: bool) -> None:
    """A replay names entries or asks for all of them, not both; corrected inputs go with named ones."""
    if bool(entry_ids) == every:
        raise UsageError("name entry ids, or --all (not both)", {"name entry ids": "name ids", "--all": "all"})
    if corrected and every:
        raise UsageError("--inputs-file replays named entries, not --all", {"--inputs-file": "inputs", "--all": "all"})


def replay_selected(
    engine: Engine,
    entry_ids: Sequence[str],
    every: bool,
    workflow: str | None = None,
    inputs: dict[str, Any] | None = None,
    who: Who | None = None,
) -> Replayed:
    """Replay the named entries (all or nothing), or every open one (of ``workflow``) in batches."""
    check_selection(entry_ids, every, inputs is not None)
    if not every:
        return replay(engine, entry_ids, inputs, who)
    total = Replayed()
    for batch in replay_all(engine, workflow, who=who):
        total.merge(batch)
    return total


def replay_all(
    engine: Engine, workflow: str | None = None, batch: int = DEFAULT_DLQ_BATCH, who: Who | None = None
) -> Iterator[Replayed]:
    """Replay every open entry (of ``workflow``), a batch per transaction, sending each batch's
    messages once it commits; entries of cancelled runs are left open and reported as refused."""
    refused: list[str] = []
    while True:
        with engine.repo.transaction() as tx:
            entries = tx.dead_letters("open", workflow, limit=batch, lock_open=True, exclude=refused)
            result, dispatches = _replay_batch(engine, tx, entries, None, who)
        engine.send(dispatches)
        result.sent = len(dispatches)
        refused += result.refused
        yield result
        if len(entries) < batch:
            return


def _replay_inputs(engine: Engine, tx: Tx, run: RunRow, entry: DeadLetter, corrected: dict[str, Any] | None) -> Any:
    """What the step is queued with again; None for a wait or an approval, which starts waiting
    afresh (its rendered event, key and deadline are worked out again)."""
    if engine.plans.get(tx, run.version).steps[entry.step].kind == "task":
        return entry.inputs if corrected is None else corrected
    if corrected is not None:
        raise DeadLetterError(
            f"dead-letter entry {entry.id} is a {entry.task} step: it takes no --inputs-file",
            {"--inputs-file": "inputs"},
        )
    return None


def _replay_batch(
    engine: Engine, tx: Tx, entries: Sequence[DeadLetter], inputs: dict[str, Any] | None, who: Who | None
) -> tuple[Replayed, list[Any]]:
    """Reopen the runs of ``entries`` (locked, open) through the runtime's ``reopen``; one audit
    record per entry replayed."""
    result = Replayed()
    runs = tx.lock_runs(list({e.run_id for e in entries}))
    good = []
    for entry in entries:
        run = runs.get(entry.run_id)
        undone = run is not None and isinstance(run.compensation, dict) and "compensated" in run.compensation
        if (
            run is None
            or run.status is RunStatus.CANCELLED
            or (undone and not entry.step.startswith(COMPENSATE_PREFIX))
        ):
            result.refused.append(entry.id)  # a cancelled run, or a step of a run whose steps were undone
        else:
            good.append(entry)
    if not good or (inputs is not None and result.refused):
        return result, []
    if inputs is not None:
        for entry in good:
            plan = engine.plans.get(tx, runs[entry.run_id].version)
            if entry.item_index is None and plan.steps[entry.step].foreach is not None:
                raise DeadLetterError(
                    f"dead-letter entry {entry.id} is a foreach step's expression; it is replayed by evaluating "
                    "it again, without --inputs-file",
                    {"--inputs-file": "inputs"},
                )
    tx.resolve_dead_letters([e.id for e in good], "replayed", now())
    steps = [
        Reopen(e.step_run_id, e.run_id, e.step, e.item_index, _replay_inputs(engine, tx, runs[e.run_id], e, inputs))
        for e in good
    ]
    dispatches = reopen(engine, tx, runs, steps)
    records = [
        (
            f"dlq:{e.id}",
            {"run_id": e.run_id, "step": e.step, "item_index": e.item_index, "corrected_inputs": inputs is not None},
        )
        for e in good
    ]
    audit.record_many(tx, who or Who(DEFAULT_SERVICE_ACTOR), "dlq.replay", records)
    result.entries = [e.id for e in good]
    result.runs = [e.run_id for e in good]
    return result, dispatches


def discard(repo: Repository, entry_ids: Sequence[str], who: Who | None = None) -> int:
    """Mark the entries discarded, all or nothing; an id named twice counts once. How many."""
    who = who or Who(DEFAULT_SERVICE_ACTOR)
    with repo.transaction() as tx:
        discarded = []
        for entry_id in dict.fromkeys(entry_ids):  # once each, in the order named
            entry = tx.dead_letter(entry_id, lock=True)
            if entry is None:
                raise DeadLetterNotFound(f"no dead-letter entry {entry_id}")
            if not tx.resolve_dead_letter(entry_id, "discarded", now()):
                raise DeadLetterRefused(f"dead-letter entry {entry_id} was already {entry.status}")
            discarded.append(entry)
        for entry in discarded:
            detail = {"run_id": entry.run_id, "step": entry.step, "item_index": entry.item_index}
            audit.record(tx, who, "dlq.discard", f"dlq:{entry.id}", detail)
    return len(discarded)


def purge(repo: Repository, older_than_s: float, include_open: bool = False, who: Who | None = None) -> int:
    """Delete entries older than the given age (replayed and discarded ones, unless ``include_open``)."""
    with repo.transaction() as tx:
        count = tx.purge_dead_letters(now() - timedelta(seconds=older_than_s), include_open)
        if count:
            detail = {"older_than_s": older_than_s, "include_open": include_open, "purged": count}
            audit.record(tx, who or Who(DEFAULT_SERVICE_ACTOR), "dlq.purge", "dlq", detail)
        return count
