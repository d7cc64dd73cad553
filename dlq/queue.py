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
from orchestrator.runtime.scheduler import FAIL_FAST_REASON, Advancer, Dispatch, new_dispatch_id
from orchestrator.runtime.service import Runtime
from orchestrator.runtime.views import iso
from orchestrator.settings import DEFAULT_DLQ_BATCH
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import DeadLetter, Repository, Tx, now

STATUSES = ("open", "replayed", "discarded")


@dataclass
class Replayed:
    entries: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def merge(self, other: Replayed) -> None:
        self.entries += other.entries
        self.runs += other.runs
        self.dispatches += other.dispatches
        self.refused += other.refused


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
    """Replay named entries: each re-executes its step (with corrected ``inputs`` if given) and
    resumes its run. An entry that is not open, or whose run was cancelled, is refused."""
    result = Replayed()
    for entry_id in entry_ids:
        with runtime.repo.transaction() as tx:
            entry = tx.dead_letter(entry_id, lock=True)
            if entry is None:
                raise DeadLetterError(f"no dead-letter entry {entry_id}")
            if entry.status != "open":
                raise DeadLetterError(f"dead-letter entry {entry_id} was already {entry.status}; nothing to replay")
            done = _replay_batch(runtime, tx, [entry], inputs)
        if done.refused:
            raise DeadLetterError(
                f"dead-letter entry {entry.id} belongs to run {entry.run_id}, which was cancelled; "
                "a cancelled run is not replayed"
            )
        result.merge(done)
    return result


def replay_all(runtime: Runtime, workflow: str | None = None, batch: int = DEFAULT_DLQ_BATCH) -> Iterator[Replayed]:
    """Replay every open entry (of ``workflow``), a batch per transaction; entries of cancelled
    runs are left open and reported as refused."""
    refused: list[str] = []
    while True:
        with runtime.repo.transaction() as tx:
            entries = tx.dead_letters("open", workflow, limit=batch, lock_open=True, exclude=refused)
            result = _replay_batch(runtime, tx, entries, None)
        refused += result.refused
        yield result
        if len(entries) < batch:
            return


def _replay_batch(runtime: Runtime, tx: Tx, entries: Sequence[DeadLetter], inputs: dict[str, Any] | None) -> Replayed:
    """Reopen the runs of ``entries`` (locked, open) in a few set-based statements.

    Each entry's step goes back to the queue with its recorded (or corrected) inputs; what the
    failure ended without running goes back to pending; each run resumes, still failing only if
    another of its steps is. Runs that need more than that (a foreach item, branches that fail
    fast cancelled) are re-scanned by the scheduler.
    """
    result = Replayed()
    runs = tx.lock_runs(list({e.run_id for e in entries}))
    good = []
    for entry in entries:
        run = runs.get(entry.run_id)
        if run is None or run.status is RunStatus.CANCELLED:
            result.refused.append(entry.id)
        else:
            good.append(entry)
    if not good:
        return result
    at = now()
    run_ids = sorted({e.run_id for e in good})
    tx.resolve_dead_letters([e.id for e in good], "replayed", at)
    reset = tx.reopen_steps_of(run_ids, [FAIL_FAST_REASON])
    queued = [(e.step_run_id, e.inputs if inputs is None else inputs, new_dispatch_id()) for e in good]
    tx.requeue_many(queued, at)
    for entry in (e for e in good if e.item_index is not None):
        parent = tx.steps(entry.run_id, [entry.step])[entry.step]
        tx.update_step(parent.id, status=StepStatus.RUNNING, error=None, reason=None, finished_at=None)
    failing = tx.first_failures(run_ids)
    tx.resume_runs([r for r in run_ids if r not in failing])
    for run_id, (step, error) in failing.items():
        tx.resume_runs([run_id], f"{step}: {error}")
    events = []
    for entry in good:
        where = {"run_id": entry.run_id, "at": at}
        events.append(
            {
                **where,
                "step": None,
                "item_index": None,
                "kind": "run.resumed",
                "detail": {"dead_letter": entry.id, "step": entry.step},
            }
        )
        events.append(
            {
                **where,
                "step": entry.step,
                "item_index": entry.item_index,
                "kind": "step.replayed",
                "detail": {"dead_letter": entry.id},
            }
        )
    tx.add_events(events)
    for entry, (row_id, _, dispatch_id) in zip(good, queued, strict=True):
        plan = runtime.plans.get(tx, runs[entry.run_id].version)
        result.dispatches.append(Dispatch(row_id, dispatch_id, timeout=plan.steps[entry.step].timeout))
        result.entries.append(entry.id)
        result.runs.append(entry.run_id)
    for run_id in sorted({r for r, _, _ in reset} | {e.run_id for e in good if e.item_index is not None}):
        run = tx.run(run_id)
        assert run is not None
        result.dispatches += Advancer(tx, runtime.plans.get(tx, run.version), run).start()
    return result


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
