"""A seeded history of runs with known timestamps, for the report tests on SQLite and PostgreSQL,
and a reference computation of what the report should say about it, in plain Python."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.store import Repository
from orchestrator.store import tables as t

BASE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # the first run starts here
AT = BASE + timedelta(days=3)  # the report is made at this time
NEEDS = {"fetch": [], "price": ["fetch"], "tax": ["fetch"], "charge": ["price", "tax"]}


@dataclass
class Attempt:
    queued: float  # seconds after the run started
    started: float
    finished: float
    status: str = "succeeded"


@dataclass
class SeededRun:
    workflow: str
    status: str
    start: datetime
    steps: dict[str, list[Attempt]] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return max(a.finished for attempts in self.steps.values() for a in attempts)


def _pipeline_run(k: int, start: datetime) -> SeededRun:
    """A succeeded run of ``shop``: ``price`` is slow (the bottleneck) and slower in each run."""
    price_start = 3 + 0.5 * k
    price_end = price_start + 4 * k
    return SeededRun(
        "shop",
        "succeeded",
        start,
        {
            "fetch": [Attempt(0, 1, 3)],
            "price": [Attempt(3, price_start, price_end)],
            "tax": [Attempt(3, 4, 5)],
            "charge": [Attempt(price_end, price_end + 1, price_end + 2)],
        },
    )


def history() -> list[SeededRun]:
    runs = [_pipeline_run(k, BASE + timedelta(hours=6 * k)) for k in range(1, 5)]
    # A failed run: price fails twice (one retry, 2 s of backoff), charge never starts
    runs.append(
        SeededRun(
            "shop",
            "failed",
            BASE + timedelta(days=1, hours=1),
            {
                "fetch": [Attempt(0, 2, 3)],
                "price": [Attempt(3, 3.5, 4.5, "failed"), Attempt(4.5, 6.5, 8, "failed")],
                "tax": [Attempt(3, 3.25, 4.25)],
            },
        )
    )
    # A second workflow with one step, on another day
    runs += [
        SeededRun("mail", "succeeded", BASE + timedelta(days=2, hours=h), {"send": [Attempt(0, 0.2 * h, 0.2 * h + h)]})
        for h in range(1, 4)
    ]
    # Outside the 7-day window: ignored
    runs.append(SeededRun("mail", "succeeded", AT - timedelta(days=9), {"send": [Attempt(0, 50, 500)]}))
    return runs


def seed(repo: Repository, runs: list[SeededRun]) -> None:
    with repo.transaction() as tx:
        for name in sorted({r.workflow for r in runs}):
            steps = (
                {s: ({"needs": NEEDS[s]} if NEEDS.get(s) else {}) for s in NEEDS} if name == "shop" else {"send": {}}
            )
            snapshot = {
                "name": name,
                "steps": {s: {"task": "orchestrator.examples:add", **spec} for s, spec in steps.items()},
            }
            tx.c.execute(
                t.definitions.insert().values(version=f"v-{name}", name=name, snapshot=snapshot, created_at=BASE)
            )
        for run in runs:
            _seed_run(tx.c, run)


def _seed_run(c: Any, run: SeededRun) -> None:
    run_id = str(uuid.uuid4())
    at = lambda seconds: run.start + timedelta(seconds=seconds)  # noqa: E731
    c.execute(
        t.runs.insert().values(
            id=run_id,
            workflow=run.workflow,
            version=f"v-{run.workflow}",
            status=run.status,
            inputs={},
            created_at=run.start,
            started_at=run.start,
            finished_at=at(run.end),
        )
    )
    events: list[dict[str, Any]] = [{"run_id": run_id, "kind": "run.started", "at": run.start}]
    for step, attempts in run.steps.items():
        last = attempts[-1]
        row_id = c.execute(
            t.step_runs.insert()
            .values(
                run_id=run_id,
                step=step,
                item_index=-1,
                status=last.status,
                attempts=len(attempts),
                queued_at=at(last.queued),
                started_at=at(last.started),
                finished_at=at(last.finished),
            )
            .returning(t.step_runs.c.id)
        ).scalar_one()
        for number, attempt in enumerate(attempts, 1):
            c.execute(
                t.attempts.insert().values(
                    step_run_id=row_id,
                    number=number,
                    status=attempt.status,
                    started_at=at(attempt.started),
                    finished_at=at(attempt.finished),
                )
            )
            queued = "step.queued" if number == 1 else "step.retrying"
            events += [
                {"run_id": run_id, "step": step, "kind": queued, "at": at(attempt.queued)},
                {"run_id": run_id, "step": step, "kind": "step.running", "at": at(attempt.started)},
                {"run_id": run_id, "step": step, "kind": f"step.{attempt.status}", "at": at(attempt.finished)},
            ]
    events.sort(key=lambda e: e["at"])
    c.execute(t.events.insert(), [{"step": None, "item_index": None, "detail": None, **e} for e in events])


def percentile(values: list[float], fraction: float) -> float | None:
    """The reference: linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def expected(runs: list[SeededRun], since: datetime) -> dict[str, dict[str, Any]]:
    """What the report should say per workflow, from the seeded runs, in plain Python."""
    found: dict[str, dict[str, Any]] = {}
    for name in sorted({r.workflow for r in runs}):
        mine = [r for r in runs if r.workflow == name and r.start >= since]
        durations = [r.end for r in mine]
        steps = {}
        for step in sorted({s for r in mine for s in r.steps}):
            tries = [a for r in mine for a in r.steps.get(step, [])]
            rows = [r.steps[step] for r in mine if step in r.steps]
            firsts = [r.steps[step][0] for r in mine if step in r.steps]
            steps[step] = {
                "runs": len(rows),
                "attempts": len(tries),
                "duration_p50_s": percentile([a.finished - a.started for a in tries], 0.5),
                "duration_p95_s": percentile([a.finished - a.started for a in tries], 0.95),
                "failure_rate": sum(1 for a in rows if a[-1].status == "failed") / len(rows),
                "retries_per_run": sum(len(a) - 1 for a in rows) / len(rows),
                "queue_p50_s": percentile([a.started - a.queued for a in firsts], 0.5),
                "queue_p95_s": percentile([a.started - a.queued for a in firsts], 0.95),
            }
        good = [r for r in mine if r.status == "succeeded"]
        found[name] = {
            "runs": len(mine),
            "succeeded": len(good),
            "success_rate": len(good) / len(mine),
            "duration_p50_s": percentile(durations, 0.5),
            "duration_p95_s": percentile(durations, 0.95),
            "steps": steps,
            "ends": {s: statistics.median(r.steps[s][-1].finished for r in good) for s in good[0].steps},
        }
    return found


def check_report(report: dict[str, Any], runs: list[SeededRun], since: datetime) -> None:
    """The report's figures are the reference's, to the millisecond (rates to 0.01 %)."""
    want = expected(runs, since)
    got = {wf["workflow"]: wf for wf in report["workflows"]}
    assert set(got) == set(want)
    for name, wf in want.items():
        mine = got[name]
        assert mine["runs"] == wf["runs"] and mine["succeeded"] == wf["succeeded"], name
        assert mine["success_rate"] == round(wf["success_rate"], 4), name
        for key in ("duration_p50_s", "duration_p95_s"):
            assert mine[key] == round(wf[key], 3), (name, key)
        steps = {s["step"]: s for s in mine["steps"]}
        assert set(steps) == set(wf["steps"]), name
        for step, figures in wf["steps"].items():
            for key, value in figures.items():
                digits = 4 if key in ("failure_rate", "retries_per_run") else 3
                want = value if isinstance(value, int) else round(value, digits)
                assert steps[step][key] == want, (name, step, key)
        path = mine["critical_path"]
        assert {s["step"]: s["end_s"] for s in path["steps"]}.items() <= {
            s: round(v, 3) for s, v in wf["ends"].items()
        }.items()
        assert path["duration_s"] == round(max(wf["ends"].values()), 3)
