"""``orchestrator report``: runs, success rates, durations, retries, queue waits and bottlenecks per
workflow and step, from the database's aggregates (one row per workflow or step comes back).

Durations are in seconds, rounded to the millisecond; rates are fractions (0.25 is 25 %). A run's
duration runs from its start to its end (ended runs only); a step's is one attempt's; its queue wait
runs from ``step.queued`` to ``step.running`` in the event log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from orchestrator.definition.duration import parse_duration
from orchestrator.errors import UsageError
from orchestrator.report.critical import critical_path, needs_of
from orchestrator.store import Repository, now

_HOURLY_UP_TO_S = 2 * 86400.0  # shorter windows chart hours, longer ones days


def since_seconds(since: str, option: str = "--since") -> float:
    """How far back a report looks: a duration (``7d``); UsageError naming ``option`` otherwise."""
    try:
        return parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _rate(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 4)


def build_report(
    repo: Repository, since_s: float, workflow: str | None = None, at: datetime | None = None
) -> dict[str, Any]:
    """The report over the runs created in the last ``since_s`` seconds (of ``workflow`` only, if given)."""
    until = at or now()
    since = until - timedelta(seconds=since_s)
    with repo.transaction() as tx:
        runs = tx.report_runs(since, workflow)
        attempts = _by_step(tx.report_attempts(since, workflow))
        outcomes = _by_step(tx.report_outcomes(since, workflow))
        waits = _by_step(tx.report_queue_waits(since, workflow))
        offsets = _by_step(tx.report_offsets(since, workflow))
        timeline = tx.report_timeline(since, workflow, hourly=since_s <= _HOURLY_UP_TO_S)
        versions = tx.report_versions(since, workflow)
        snapshots = {name: tx.definition(version) for name, version in versions.items()}
    workflows = []
    for row in runs:
        name = row["workflow"]
        order = list((snapshots.get(name) or {}).get("steps", {}))
        steps = _steps(name, order, attempts, outcomes, waits)
        ends = {step: float(r["p50"]) for (wf, step), r in offsets.items() if wf == name and r["p50"] is not None}
        workflows.append(
            {
                **_runs(row),
                "steps": steps,
                "critical_path": _rounded_path(critical_path(ends, needs_of(snapshots.get(name)))),
                "timeline": [
                    {
                        "bucket": b["bucket"],
                        "runs": int(b["n"]),
                        "p50_s": _seconds(b["p50"]),
                        "p95_s": _seconds(b["p95"]),
                    }
                    for b in timeline
                    if b["workflow"] == name
                ],
            }
        )
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "workflow": workflow,
        "workflows": workflows,
    }


def _by_step(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["workflow"], row["step"]): row for row in rows}


def _runs(row: dict[str, Any]) -> dict[str, Any]:
    ended = int(row["succeeded"] or 0) + int(row["failed"] or 0) + int(row["cancelled"] or 0)
    return {
        "workflow": row["workflow"],
        "runs": int(row["runs"]),
        "succeeded": int(row["succeeded"] or 0),
        "failed": int(row["failed"] or 0),
        "cancelled": int(row["cancelled"] or 0),
        "active": int(row["active"] or 0),
        "success_rate": _rate(int(row["succeeded"] or 0), ended),
        "duration_p50_s": _seconds(row["p50"]),
        "duration_p95_s": _seconds(row["p95"]),
    }


def _steps(
    workflow: str,
    order: list[str],
    attempts: dict[tuple[str, str], dict[str, Any]],
    outcomes: dict[tuple[str, str], dict[str, Any]],
    waits: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    names = {step for wf, step in outcomes if wf == workflow}
    ranked = [n for n in order if n in names] + sorted(names.difference(order))
    found = []
    for step in ranked:
        outcome, tried, wait = (
            outcomes[(workflow, step)],
            attempts.get((workflow, step), {}),
            waits.get((workflow, step), {}),
        )
        ended = int(outcome["succeeded"] or 0) + int(outcome["failed"] or 0)
        found.append(
            {
                "step": step,
                "runs": int(outcome["runs"] or 0),
                "attempts": int(tried.get("n") or 0),
                "duration_p50_s": _seconds(tried.get("p50")),
                "duration_p95_s": _seconds(tried.get("p95")),
                "failure_rate": _rate(int(outcome["failed"] or 0), ended),
                "retries_per_run": _rate(int(outcome["retries"] or 0), int(outcome["runs"] or 0)),
                "queue_p50_s": _seconds(wait.get("p50")),
                "queue_p95_s": _seconds(wait.get("p95")),
            }
        )
    return found


def _rounded_path(path: dict[str, Any] | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {
        "duration_s": _seconds(path["duration_s"]),
        "bottleneck": path["bottleneck"],
        "steps": [
            {
                "step": s["step"],
                "end_s": _seconds(s["end_s"]),
                "segment_s": _seconds(s["segment_s"]),
                "share": round(s["share"], 4),
            }
            for s in path["steps"]
        ],
    }
