"""Read-only views of runs, in the JSON shapes of the contract (``status --json`` and friends)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from orchestrator.errors import NotFound
from orchestrator.store import Repository, RunRow, StepRow


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def run_view(repo: Repository, run_id: str, with_attempts: bool = False) -> dict[str, Any]:
    """One run and all its steps, in definition order; foreach steps summarise their items."""
    with repo.transaction() as tx:
        run = tx.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        steps = tx.steps(run_id)
        items = tx.items(run_id)
        snapshot = tx.definition(run.version) or {}
        attempts = tx.attempts([r.id for r in steps.values()] + [i.id for i in items]) if with_attempts else []
        dead_letters = [(e.id, e.status) for e in tx.dead_letters(run_id=run_id)]
    order = list(snapshot.get("steps", {})) or sorted(steps)
    by_step: dict[str, list[StepRow]] = {}
    for item in items:
        by_step.setdefault(item.step, []).append(item)
    tries: dict[int, list[dict[str, Any]]] | None = {} if with_attempts else None
    for attempt in attempts:
        assert tries is not None
        tries.setdefault(attempt["step_run_id"], []).append(
            {
                "number": attempt["number"],
                "status": attempt["status"],
                "error": attempt["error"],
                "worker": attempt["worker"],
                "started_at": iso(attempt["started_at"]),
                "finished_at": iso(attempt["finished_at"]),
            }
        )
    view = summary(run)
    view["dead_letters"] = [{"id": entry_id, "status": status} for entry_id, status in dead_letters]
    view["steps"] = {name: _step_view(steps[name], by_step.get(name), tries) for name in order if name in steps}
    return view


def summary(run: RunRow) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "workflow": run.workflow,
        "version": run.version,
        "status": str(run.status),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }


def _step_view(
    row: StepRow, items: list[StepRow] | None, tries: dict[int, list[dict[str, Any]]] | None
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "status": str(row.status),
        "attempts": row.attempts if items is None else sum(i.attempts for i in items),
        "output": row.output,
        "error": row.error,
        "reason": row.reason,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }
    if items is not None:
        counts = Counter(str(i.status) for i in items)
        view["items"] = {"total": len(items), **dict(sorted(counts.items()))}
    if tries is not None:
        log = list(tries.get(row.id, []))
        if row.status.value == "running" and items is None:
            log.append(
                {
                    "number": row.attempts,
                    "status": "running",
                    "error": None,
                    "worker": row.worker,
                    "started_at": iso(row.started_at),
                    "finished_at": None,
                }
            )
        view["attempt_log"] = log
        if items is not None:
            view["item_attempts"] = {str(i.item_index): tries.get(i.id, []) for i in items if i.id in tries}
    return view


def runs_view(repo: Repository, status: str | None, workflow: str | None, limit: int) -> list[dict[str, Any]]:
    with repo.transaction() as tx:
        return [summary(run) for run in tx.runs(status, workflow, limit)]


def history_view(repo: Repository, run_id: str) -> list[dict[str, Any]]:
    with repo.transaction() as tx:
        if tx.run(run_id) is None:
            raise NotFound(f"no run {run_id}")
        events = tx.history(run_id)
    return [{**event, "at": iso(event["at"])} for event in events]
