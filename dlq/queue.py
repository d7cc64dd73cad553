"""Dead-letter operations. An entry is written by the runtime, in the same transaction that fails
its step for good; here people list, replay, discard and purge them.

Replaying locks the entry before the run, so one entry replayed twice, even at the same moment,
gives exactly one new attempt: the second replay finds the entry already replayed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator.errors import DeadLetterError, NotFound
from orchestrator.runtime.scheduler import Advancer, Dispatch
from orchestrator.runtime.service import Runtime
from orchestrator.runtime.views import iso
from orchestrator.settings import DEFAULT_DLQ_BATCH
from orchestrator.status import RunStatus
from orchestrator.store import DeadLetter, Repository, Tx, now

STATUSES = ("open", "replayed", "discarded")


@dataclass
class Replayed:
    entries: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


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


def replay(runtime: Runtime, entry_ids: Sequence[str], inputs: dict[str, Any] | None = None) -> Replayed:
    """Replay entries one by one; each re-executes its step and resumes its run."""
    result = Replayed()
    for entry_id in entry_ids:
        with runtime.repo.transaction() as tx:
            entry = tx.dead_letter(entry_id, lock=True)
            if entry is None:
                raise DeadLetterError(f"no dead-letter entry {entry_id}")
            if entry.status != "open":
                raise DeadLetterError(f"dead-letter entry {entry_id} was already {entry.status}; nothing to replay")
            result.dispatches.extend(_replay_one(runtime, tx, entry, inputs))
        result.entries.append(entry_id)
        result.runs.append(entry.run_id)
    return result


def replay_all(runtime: Runtime, workflow: str | None = None, batch: int = DEFAULT_DLQ_BATCH) -> Iterator[Replayed]:
    """Replay every open entry (of ``workflow``), a batch per transaction; entries of cancelled
    runs are left open and reported as refused."""
    refused: set[str] = set()
    while True:
        result = Replayed()
        with runtime.repo.transaction() as tx:
            entries = [
                e
                for e in tx.dead_letters("open", workflow, limit=batch + len(refused), lock_open=True)
                if e.id not in refused
            ][:batch]
            for entry in entries:
                try:
                    result.dispatches.extend(_replay_one(runtime, tx, entry, None))
                except DeadLetterError:
                    refused.add(entry.id)
                    result.refused.append(entry.id)
                    continue
                result.entries.append(entry.id)
                result.runs.append(entry.run_id)
        yield result
        if len(entries) < batch:
            return


def _replay_one(runtime: Runtime, tx: Tx, entry: DeadLetter, inputs: dict[str, Any] | None) -> list[Dispatch]:
    run = tx.lock_run(entry.run_id)
    if run is None:
        raise DeadLetterError(f"the run of dead-letter entry {entry.id} no longer exists")
    if run.status is RunStatus.CANCELLED:
        raise DeadLetterError(
            f"dead-letter entry {entry.id} belongs to run {run.id}, which was cancelled; "
            "a cancelled run is not replayed"
        )
    if not tx.resolve_dead_letter(entry.id, "replayed", now()):
        raise DeadLetterError(f"dead-letter entry {entry.id} was already replayed")
    row = tx.step_run(entry.step_run_id, lock=True)
    if row is None:
        raise DeadLetterError(f"the step of dead-letter entry {entry.id} no longer exists")
    plan = runtime.plans.get(tx, run.version)
    return Advancer(tx, plan, run).reopen(row, entry.inputs if inputs is None else inputs)


def discard(repo: Repository, entry_ids: Sequence[str]) -> None:
    with repo.transaction() as tx:
        for entry_id in entry_ids:
            entry = tx.dead_letter(entry_id, lock=True)
            if entry is None:
                raise DeadLetterError(f"no dead-letter entry {entry_id}")
            if not tx.resolve_dead_letter(entry_id, "discarded", now()):
                raise DeadLetterError(f"dead-letter entry {entry_id} was already {entry.status}")


def purge(repo: Repository, older_than_s: float, include_open: bool = False) -> int:
    """Delete entries older than the given age (replayed and discarded ones, unless ``include_open``)."""
    with repo.transaction() as tx:
        return tx.purge_dead_letters(now() - timedelta(seconds=older_than_s), include_open)
