"""Read-only views of runs, in the JSON shapes of the contract (``status --json`` and friends)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.definition.machine import state_of
from orchestrator.errors import NotFound, shown
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import Repository, RunRow, StepRow, Tx
from orchestrator.store.pages import ItemCounts

_EVENT_PAGE = 1000  # events read per query while catching up with a run
_STATUSES = frozenset(s.value for s in StepStatus)
_QUEUED_AGAIN = frozenset({"retrying", "deferred", "redispatched", "woken", "replayed"})
_OTHER = {"held": StepStatus.QUEUED.value, "accepted": StepStatus.SUCCEEDED.value}
_KEEPS_ERROR = frozenset({StepStatus.QUEUED.value, StepStatus.FAILED.value, StepStatus.CANCELLED.value})
_RESETS = frozenset({"step.replayed", "step.reopened"})  # a failed row put back: its error is gone
_ENDED_BY = frozenset({StepStatus.SKIPPED.value, StepStatus.CANCELLED.value})


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def run_view(repo: Repository, run_id: str, with_attempts: bool = False) -> dict[str, Any]:
    """One run and all its steps, in definition order; foreach steps summarise their items."""
    with repo.transaction() as tx:
        run = tx.run(run_id)
        if run is None:
            raise NotFound(f"no run {shown(run_id)}")
        steps = tx.steps(run_id)
        items = tx.items(run_id)
        snapshot = tx.definition(run.version) or {}
        attempts = tx.attempts(run_id=run_id) if with_attempts else []
        dead_letters = [(e.id, e.status) for e in tx.dead_letters(run_id=run_id)]
        waiting = [r.id for r in steps.values() if r.status is StepStatus.WAITING and r.wait_kind == "approval"]
        decisions = tx.decisions(waiting)
        children = {c.parent_step_run_id: c.id for c in tx.children(run_id)}  # the newest per step row
        parent_row = tx.step_run(run.parent_step_run_id) if run.parent_step_run_id is not None else None
        moves = [e for e in tx.history(run_id) if e["kind"] == "state.transition"] if "states" in snapshot else []
    order = list(snapshot.get("steps", {})) or sorted(steps, key=lambda name: steps[name].id)
    order += sorted((n for n in steps if n not in order), key=lambda name: steps[name].id)  # compensations
    by_step: dict[str, list[StepRow]] = {}
    for item in items:
        by_step.setdefault(item.step, []).append(item)
    tries: dict[int, list[dict[str, Any]]] | None = {} if with_attempts else None
    for attempt in attempts:
        assert tries is not None
        tries.setdefault(attempt["step_run_id"], []).append(attempt_view(attempt))
    view = summary(run)
    if parent_row is not None:
        view["parent"]["step"] = parent_row.step
        if parent_row.is_item:
            view["parent"]["item_index"] = parent_row.item_index
    if "states" in snapshot:
        latest = max(steps.values(), key=lambda row: row.id, default=None)
        view["state"] = state_of(latest.step) if latest is not None else None
        view["transitions"] = [
            {
                "from": state_of(e["detail"]["from"]),
                "to": state_of(e["detail"]["to"]),
                "reason": e["detail"]["reason"],
                "at": iso(e["at"]),
            }
            for e in moves
        ]
    view["dead_letters"] = [{"id": entry_id, "status": status} for entry_id, status in dead_letters]
    view["steps"] = {
        name: step_view(steps[name], _counted(by_step.get(name)), tries, by_step.get(name))
        for name in order
        if name in steps
    }
    for name, row in steps.items():
        if name in view["steps"]:
            annotate(view["steps"][name], row, spec_of(snapshot, name), decisions, children, by_step.get(name, []))
    return view


def spec_of(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    """The step's (or state's) definition in the run's snapshot."""
    found = (snapshot.get("steps") or snapshot.get("states") or {}).get(state_of(name), {})
    return found if isinstance(found, dict) else {}


def annotate(
    view: dict[str, Any],
    row: StepRow,
    spec: dict[str, Any],
    decisions: list[dict[str, Any]],
    children: Mapping[Any, str],
    items: list[StepRow],
) -> None:
    """What the step waits for, and the child runs of it and of ``items``, added to its view."""
    if row.status is StepStatus.WAITING:
        view["waiting_for"] = waiting_for(row, spec.get("approval"), decisions)
    if row.id in children:
        view["child_run"] = children[row.id]
    kids = {i.item_index: children[i.id] for i in items if i.id in children}
    if kids:
        view["child_runs"] = {str(k): v for k, v in sorted(kids.items())}


def _counted(items: list[StepRow] | None) -> ItemCounts | None:
    if items is None:
        return None
    statuses = Counter(str(i.status) for i in items)
    cached = sum(1 for i in items if i.cached)
    return ItemCounts(len(items), dict(sorted(statuses.items())), cached, sum(i.attempts for i in items))


def attempt_view(attempt: dict[str, Any]) -> dict[str, Any]:
    """One attempt of a step's ``attempt_log``."""
    return {
        "number": attempt["number"],
        "status": attempt["status"],
        "error": attempt["error"],
        "worker": attempt["worker"],
        "started_at": iso(attempt["started_at"]),
        "finished_at": iso(attempt["finished_at"]),
    }


def waiting_for(row: StepRow, approval: dict[str, Any] | None, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """What a waiting step waits for, as ``status --json`` shows it."""
    due = iso(row.not_before)
    if row.wake == "restart":
        return {"retry_at": due}
    if row.wait_kind == "event":
        return {"event": row.wait_event, "key": row.wait_key, "deadline": due}
    if row.wait_kind == "timer":
        return {"timer": due}
    if row.wait_kind == "workflow":
        return {"child_run": row.wait_key}
    spec = approval or {}
    mine = [d for d in decisions if d["step_run_id"] == row.id and d["wait_id"] == row.dispatch_id]
    return {
        "approval": {
            "approvers": list(spec.get("approvers", [])),
            "required": spec.get("required", 1),
            "approved_by": [d["actor"] for d in mine if d["decision"] == "approved"],
            "keyword": "keyword" in spec,
            "since": iso(row.started_at),
            "deadline": due,
        }
    }


def summary(run: RunRow) -> dict[str, Any]:
    found = {
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
    if run.parent_run_id is not None:
        found["parent"] = {"run_id": run.parent_run_id}
    if run.started_by is not None:
        found["started_by"] = run.started_by
    if isinstance(run.compensation, dict) and "compensated" in run.compensation:
        found["compensated"] = run.compensation["compensated"]
        found["compensation"] = {k: v for k, v in run.compensation.items() if k != "compensated"}
    return found


def step_view(
    row: StepRow,
    counts: ItemCounts | None,
    tries: dict[int, list[dict[str, Any]]] | None,
    items: list[StepRow] | None = None,
) -> dict[str, Any]:
    """A step as ``status --json`` shows it: ``counts`` of its items (a foreach), ``tries`` the
    attempts by step row (None: no ``attempt_log``), ``items`` those whose attempts are shown."""
    view: dict[str, Any] = {
        "status": str(row.status),
        "attempts": row.attempts if counts is None else counts.attempts,
        "output": row.output,
        "error": row.error,
        "reason": row.reason,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }
    if row.cached:
        view["cached"] = True
    if counts is not None:
        view["items"] = {"total": counts.total, **counts.statuses}
        if counts.cached:
            view["items"]["cached"] = counts.cached
    if tries is not None:
        log = list(tries.get(row.id, []))
        if row.status.value == "running" and counts is None:
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
        if counts is not None and items is not None:
            view["item_attempts"] = {str(i.item_index): tries.get(i.id, []) for i in items if i.id in tries}
    return view


def approvals_view(repo: Repository) -> list[dict[str, Any]]:
    """Approvals waiting for a decision, oldest first: the run, the step, who may decide, since
    when and until when, and who has approved so far."""
    with repo.transaction() as tx:
        waiting = tx.waiting_approvals()
        decisions = tx.decisions([row.id for row, _, _ in waiting])
        snapshots = {version: tx.definition(version) or {} for version in {v for _, _, v in waiting}}
    found = []
    for row, workflow, version in waiting:
        nodes = snapshots[version].get("steps") or snapshots[version].get("states") or {}
        spec = nodes.get(state_of(row.step), {}).get("approval", {})
        found.append(
            {
                "run_id": row.run_id,
                "workflow": workflow,
                "step": row.step,
                **waiting_for(row, spec, decisions)["approval"],
            }
        )
    return found


def runs_view(
    repo: Repository, status: str | None, workflow: str | None, limit: int, parent: str | None = None
) -> list[dict[str, Any]]:
    with repo.transaction() as tx:
        return [summary(run) for run in tx.runs(status, workflow, limit, parent)]


def history_view(repo: Repository, run_id: str) -> list[dict[str, Any]]:
    with repo.transaction() as tx:
        if tx.run(run_id) is None:
            raise NotFound(f"no run {shown(run_id)}")
        events = tx.history(run_id)
    return [{**event, "at": iso(event["at"])} for event in events]


class RunWatch:
    """A run followed through its event log: one full ``run_view`` to start, then each ``poll``
    reads the run row and the events not yet seen, so its cost follows what happened, not the
    size of the run. The view it returns is its own, changed in place by the next poll; once the
    run has ended it is a fresh ``run_view``, exactly."""

    def __init__(self, repo: Repository, run_id: str) -> None:
        self.repo, self.run_id = repo, run_id
        self.done = False
        self._tallies: dict[str, _Tally] = {}
        self._floor = self._high = 0
        self._recent: set[int] = set()
        with repo.transaction() as tx:
            run = tx.run(run_id)
            if run is None:
                raise NotFound(f"no run {shown(run_id)}")
            if not run.status.terminal:
                # The log so far, before the view: what run_view shows is then at least as new.
                for event in self._unseen(tx):
                    self._tally(event)
        self._floor, self._recent = self._high, set()
        self.view = run_view(repo, run_id)
        self.done = RunStatus(self.view["status"]).terminal

    def poll(self) -> dict[str, Any]:
        """The view now: the run row and the new events applied; the full view once the run has ended."""
        if self.done:
            return self.view
        with self.repo.transaction() as tx:
            run = tx.run(self.run_id)
            if run is None:
                raise NotFound(f"no run {shown(self.run_id)}")
            succeeded = [] if run.status.terminal else self._apply(self._unseen(tx))
            rows = tx.steps(self.run_id, succeeded) if succeeded else {}
        if run.status.terminal:
            self.view, self.done = run_view(self.repo, self.run_id), True
            return self.view
        self.view.update(summary(run))
        for name, row in rows.items():
            step = self.view["steps"].get(name)
            if step is not None and step["status"] == StepStatus.SUCCEEDED:
                step["output"] = row.output
        return self.view

    def _unseen(self, tx: Tx) -> list[dict[str, Any]]:
        """Events not applied yet. Each poll reads again from the previous poll's high mark, since
        PostgreSQL may commit an event a moment after one with a higher id; those read before are
        skipped, so an event costs at most two reads and is applied once."""
        page: list[dict[str, Any]] = []
        after = self._floor
        while True:
            batch = tx.events_after(self.run_id, after, _EVENT_PAGE)
            page += batch
            if len(batch) < _EVENT_PAGE:
                break
            after = batch[-1]["id"]
        fresh = [e for e in page if e["id"] not in self._recent]
        self._floor, self._high = self._high, max([self._high, *(e["id"] for e in page)])
        self._recent = {e["id"] for e in page if e["id"] > self._floor}
        return fresh

    def _tally(self, event: dict[str, Any]) -> tuple[_Tally, str] | None:
        detail = event["detail"] if isinstance(event["detail"], dict) else {}
        status = _status_of(event["kind"], detail)
        if event["step"] is None or status is None:
            return None
        tally = self._tallies.setdefault(event["step"], _Tally())
        if event["item_index"] is None:
            tally.row(event["kind"], status, detail)
        else:
            tally.item(event["item_index"], event["kind"], status, detail)
        return tally, status

    def _apply(self, events: list[dict[str, Any]]) -> list[str]:
        """Apply events to the view; the steps whose own row has just succeeded (their output is
        then worth loading)."""
        succeeded: set[str] = set()
        for event in events:
            counted = self._tally(event)
            step = self.view["steps"].get(event["step"])
            if counted is None or step is None:
                continue
            tally, status = counted
            if event["item_index"] is None:
                _show_row(step, event, status)
                if status == StepStatus.SUCCEEDED:
                    succeeded.add(event["step"])
                else:
                    succeeded.discard(event["step"])
            if tally.total:
                step["attempts"], step["items"] = tally.tries, tally.summary()
            elif "items" not in step:
                step["attempts"] = tally.attempts
        return sorted(succeeded)


@dataclass
class _Tally:
    """What the event log says of one step: its own row's status and attempts, and its items'."""

    status: str = StepStatus.PENDING.value
    attempts: int = 0
    total: int | None = None  # the step's items, once it has expanded
    items: dict[int, tuple[str, int]] = field(default_factory=dict)  # (status, attempts); unseen: pending, 0
    counts: Counter[str] = field(default_factory=Counter)
    tries: int = 0  # the items' attempts, summed

    def row(self, kind: str, status: str, detail: dict[str, Any]) -> None:
        self.attempts = _attempts_after(kind, detail, self.status, self.attempts)
        self.status = status
        if kind == "step.expanded" and isinstance(detail.get("items"), int):
            self.total, self.items, self.tries = detail["items"], {}, 0
            self.counts = Counter({StepStatus.PENDING.value: detail["items"]})

    def item(self, index: int, kind: str, status: str, detail: dict[str, Any]) -> None:
        total = self.total or 0
        if index >= total:  # an item its expansion did not announce: count it, and those before it
            self.counts[StepStatus.PENDING.value] += index + 1 - total
            self.total = index + 1
        before_status, before_attempts = self.items.get(index, (StepStatus.PENDING.value, 0))
        self.counts[before_status] -= 1
        attempts = _attempts_after(kind, detail, before_status, before_attempts)
        self.items[index] = (status, attempts)
        self.counts[status] += 1
        self.tries += attempts - before_attempts

    def summary(self) -> dict[str, int]:
        """As run_view counts items: the total, then each status present, by name."""
        return {"total": self.total or 0, **{s: n for s, n in sorted(self.counts.items()) if n > 0}}


def _status_of(kind: str, detail: dict[str, Any]) -> str | None:
    """The status a ``step.*`` event leaves its row in; None for one that changes none."""
    name = kind.removeprefix("step.")
    if name == kind:
        return None
    if name in _STATUSES:
        return name
    if name in _QUEUED_AGAIN:
        return StepStatus.QUEUED.value
    if name == "expanded":
        return StepStatus.RUNNING.value
    if name == "reopened" and detail.get("status") in _STATUSES:
        return str(detail["status"])
    if name == "retrying" and detail.get("wait"):
        return StepStatus.WAITING.value
    return _OTHER.get(name)


def _attempts_after(kind: str, detail: dict[str, Any], status: str, attempts: int) -> int:
    """A claim numbers its attempt; a deferral gives one back (a breaker burns no retry)."""
    if kind in ("step.running", "step.waiting") and isinstance(detail.get("attempt"), int):
        return int(detail["attempt"])
    if kind == "step.deferred" and status == StepStatus.RUNNING:
        return max(0, attempts - 1)
    return attempts


def _waiting_from(detail: dict[str, Any]) -> dict[str, Any]:
    """A ``step.waiting`` event's account of what the step waits for (as ``waiting_for`` shows it)."""
    kind, due = detail.get("for"), detail.get("until")
    if kind == "event":
        return {"event": detail.get("event"), "key": detail.get("key"), "deadline": due}
    if kind == "timer":
        return {"timer": due}
    if kind == "workflow":
        return {"child_run": detail.get("child_run")}
    return {"approval": {"deadline": due}}


def _show_row(step: dict[str, Any], event: dict[str, Any], status: str) -> None:
    """A step row's own event in its view, as near to its row as the event tells."""
    detail = event["detail"] if isinstance(event["detail"], dict) else {}
    step["status"] = status
    if "error" in detail:
        step["error"] = detail["error"]
    elif event["kind"] in _RESETS or status not in _KEEPS_ERROR:
        step["error"] = None
    step["reason"] = detail.get("reason") if status in _ENDED_BY else None
    if status != StepStatus.SUCCEEDED:
        step["output"] = None
    if event["kind"] in ("step.running", "step.expanded", "step.waiting"):
        step["started_at"] = iso(event["at"])
    if event["kind"] == "step.waiting":
        step["waiting_for"] = _waiting_from(detail)
    elif status != StepStatus.WAITING:
        step.pop("waiting_for", None)
    step["finished_at"] = iso(event["at"]) if StepStatus(status).terminal else None
