"""scale: one worker with 4 pool processes under a large foreach and many runs at once.

Opt-in (``python -m bench --scale``; with ``--quick``, the small sizes), never in the default run:
at full size it takes many minutes. Each case starts on empty run tables with a worker of its
own, so a peak RSS and a table size belong to that case alone. ``BENCH_SCALE_*`` override sizes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.env import Services
from bench.runs import Ours, chain_plan
from orchestrator.definition import Plan, WorkflowBuilder, build_plan

POLL_S = 0.1
SAMPLE_S = 0.5
TABLES = ("step_runs", "events", "attempts", "runs")


@dataclass(frozen=True)
class Sizes:
    """The full sizes. The small foreach is a tenth of ``items``, so that the cost per item at
    both sizes says whether the foreach is linear."""

    items: int = 100_000
    runs: int = 2_000
    steps: int = 10
    concurrency: int = 100
    workers: int = 4


QUICK = Sizes(items=2_000, runs=100)


def sizes(quick: bool, environ: Mapping[str, str]) -> Sizes:
    """``--quick`` picks the small sizes; ``BENCH_SCALE_ITEMS=5000`` (and so on) overrides either."""
    keys = {f.name: f"BENCH_SCALE_{f.name.upper()}" for f in fields(Sizes)}
    return replace(QUICK if quick else Sizes(), **{k: int(environ[v]) for k, v in keys.items() if v in environ})


def foreach_plan(concurrency: int) -> Plan:
    wf = WorkflowBuilder("bench-scale-fanout", inputs={"type": "object", "properties": {"items": {"type": "array"}}})
    fan = wf.step("fan", "bench.tasks:noop", foreach="${{ inputs.items }}", concurrency=concurrency)
    wf.step("join", "bench.tasks:noop", needs=[fan])
    return build_plan(wf.build(), check_tasks=False)


# The worker's memory


def _group_members(group: int) -> list[int]:
    """The processes of a process group: the worker's main process and its pool children."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):  # it exited between the listing and the read
                continue
            if int(stat.rpartition(")")[2].split()[2]) == group:
                members.append(int(entry.name))
    return members


def _high_water_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


class PeakRss:
    """The peak resident set (VmHWM) of each process of the worker, sampled in a thread so that a
    pool child which exits before the end is counted too."""

    def __init__(self, main_pid: int) -> None:
        self.main_pid = main_pid
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        for pid in _group_members(self.main_pid):
            kb = _high_water_kb(pid)
            if kb is not None:
                self.peaks[pid] = max(kb, self.peaks.get(pid, 0))

    def line(self, case: str, n: int) -> dict[str, Any]:
        children = [kb for pid, kb in self.peaks.items() if pid != self.main_pid]
        return {
            "name": "scale_rss",
            "case": case,
            "n": n,
            "child_peak_mb": round(max(children, default=0) / 1024, 1),
            "main_peak_mb": round(self.peaks.get(self.main_pid, 0) / 1024, 1),
            "children": len(children),
        }


# The state store


class Store:
    """The bench's reads of the state store, in SQL: waiting, sizes, and the gaps between steps."""

    def __init__(self, ours: Ours) -> None:
        self.engine = ours.repo.engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def reset(self) -> None:
        """Empty the run tables (and what references them), so a case's sizes are its own."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))

    def wait(self, runs: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        done = "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')"
        while self.scalar(done) < runs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scale case did not finish in {timeout:.0f} s")
            time.sleep(POLL_S)
        failed = self.scalar("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
        if failed:
            raise RuntimeError(f"{failed} of {runs} scale runs did not succeed")

    def rows_read(self) -> tuple[int, int]:
        """Rows of step_runs read so far (by scans and index fetches), as the statistics count them,
        and how many times autovacuum has analyzed it: until it has, the claim may be planned on the
        status index and read every queued row (bench/README.md). A backend reports its counts when
        it goes idle or exits, so read this after the worker stopped."""
        with self.engine.connect() as conn:
            read, analyzed = conn.execute(sa.text(_ROWS_READ)).one()
        return int(read), int(analyzed)

    def open_steps(self) -> int:
        """Step rows not ended after every run succeeded: there should be none."""
        return int(self.scalar("SELECT count(*) FROM step_runs WHERE status IN ('pending', 'queued', 'running')"))

    def size_line(self, case: str, n: int) -> dict[str, Any]:
        rows = int(self.scalar("SELECT count(*) FROM step_runs"))
        per_1k: dict[str, dict[str, float]] = {}
        with self.engine.connect() as conn:
            for table in TABLES:
                total, index = conn.execute(sa.text(_SIZE), {"t": table}).one()
                per_1k[table] = {"total_kb": _per_1k(total, rows), "index_kb": _per_1k(index, rows)}
        all_kb = round(sum(t["total_kb"] for t in per_1k.values()), 1)
        return {
            "name": "scale_pg_size",
            "case": case,
            "n": n,
            "step_rows": rows,
            "kb_per_1k_steps": all_kb,
            **per_1k,
            "autovacuum": self.scalar("SHOW autovacuum"),  # off: the dead row versions are all counted
        }

    def gaps_line(self, plan: Plan, runs: int) -> dict[str, Any]:
        """From a step's end (finished_at) to its dependent's claim (started_at), over every edge of
        every run; ``to_queued`` is the part until the dependent was queued (the completion's own
        transaction), the rest is the message's way and its wait behind the others."""
        needs, steps = zip(*[(need, sp.id) for sp in plan.steps.values() for need in sp.needs], strict=True)
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(_GAPS), {"needs": list(needs), "steps": list(steps)}).one()
        ms = [round(float(v) * 1000, 1) if v is not None else None for v in row[1:]]
        return {
            "name": "scale_latency",
            "case": "linear",
            "n": runs,
            "edges": row[0],
            "p50_ms": ms[0],
            "p99_ms": ms[1],
            "max_ms": ms[2],
            "to_queued_p50_ms": ms[3],
            "to_queued_p99_ms": ms[4],
        }

    def join_gap_ms(self) -> float:
        """From the foreach's last item's end to the join's claim."""
        return round(float(self.scalar(_JOIN_GAP)) * 1000, 1)


_GAPS = """
WITH edge AS (SELECT * FROM unnest(CAST(:needs AS text[]), CAST(:steps AS text[])) AS e(need, step)),
gap AS (
    SELECT EXTRACT(EPOCH FROM d.started_at - n.finished_at) AS start_s,
           EXTRACT(EPOCH FROM d.queued_at - n.finished_at) AS queue_s
    FROM edge
    JOIN step_runs n ON n.step = edge.need AND n.item_index = -1
    JOIN step_runs d ON d.run_id = n.run_id AND d.step = edge.step AND d.item_index = -1
)
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY start_s),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY start_s),
       max(start_s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_s),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY queue_s)
FROM gap
"""

_ROWS_READ = """
SELECT seq_tup_read + coalesce(idx_tup_fetch, 0), autoanalyze_count FROM pg_stat_user_tables
WHERE relname = 'step_runs'
"""

_SIZE = "SELECT pg_total_relation_size(CAST(:t AS regclass)), pg_indexes_size(CAST(:t AS regclass))"

_JOIN_GAP = """
SELECT EXTRACT(EPOCH FROM j.started_at
       - (SELECT max(finished_at) FROM step_runs WHERE step = 'fan' AND item_index >= 0))
FROM step_runs j WHERE j.step = 'join'
"""


def _settled(store: Store, before: tuple[int, int]) -> tuple[int, int]:
    """Rows read and autoanalyze runs since ``before``, once the stopped worker's backends have
    exited and reported their counts."""
    time.sleep(1.0)
    read, analyzed = store.rows_read()
    return read - before[0], analyzed - before[1]


def _per_1k(size_bytes: int, rows: int) -> float:
    return round(size_bytes / 1024 / (rows / 1000), 1)


# The cases


def foreach_case(services: Services, ours: Ours, n: int, size: Sizes) -> Iterator[dict[str, Any]]:
    store = Store(ours)
    store.reset()
    read_before = store.rows_read()
    with services.worker("ours", size.workers) as process, PeakRss(process.pid) as rss:
        start = time.perf_counter()
        ours.operations.submit(ours.engine, foreach_plan(size.concurrency), {"items": list(range(n))})
        submitted = time.perf_counter() - start
        store.wait(1, max(600.0, n * 0.05))
        elapsed = time.perf_counter() - start
    read, analyzed = _settled(store, read_before)
    yield {
        "name": "scale_foreach",
        "n": n,
        "ours_s": round(elapsed, 3),
        "per_item_ms": round(elapsed / n * 1000, 3),
        "submit_s": round(submitted, 3),
        "rows_read_per_item": round(read / n, 1),
        "autoanalyzed": analyzed,
        "join_gap_ms": store.join_gap_ms(),
        "open_steps": store.open_steps(),
        "concurrency": size.concurrency,
        "workers": size.workers,
    }
    yield rss.line("foreach", n)
    yield store.size_line("foreach", n)


def linear_case(services: Services, ours: Ours, size: Sizes) -> Iterator[dict[str, Any]]:
    store = Store(ours)
    store.reset()
    plan = chain_plan(size.steps, "bench-scale-linear")
    n = size.runs * size.steps
    read_before = store.rows_read()
    with services.worker("ours", size.workers) as process, PeakRss(process.pid) as rss:
        start = time.perf_counter()
        for _ in range(size.runs):
            ours.operations.submit(ours.engine, plan, {})
        submitted = time.perf_counter() - start
        store.wait(size.runs, max(600.0, n * 0.05))
        elapsed = time.perf_counter() - start
    read, analyzed = _settled(store, read_before)
    yield {
        "name": "scale_linear",
        "n": n,
        "runs": size.runs,
        "steps_per_run": size.steps,
        "ours_s": round(elapsed, 3),
        "steps_per_s": round(n / elapsed, 1),
        "submit_s": round(submitted, 3),
        "rows_read_per_step": round(read / n, 1),
        "autoanalyzed": analyzed,
        "open_steps": store.open_steps(),
        "workers": size.workers,
    }
    yield rss.line("linear", n)
    yield store.size_line("linear", n)
    yield store.gaps_line(plan, size.runs)


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    size = sizes(quick, os.environ)
    ours = Ours()
    per_item: dict[int, float] = {}
    for n in (size.items // 10, size.items):
        for line in foreach_case(services, ours, n, size):
            if line["name"] == "scale_foreach":
                per_item[n] = line["per_item_ms"]
            yield line
    small, large = per_item
    yield {
        "name": "scale_foreach_scaling",
        "n": large,
        "small_n": small,
        "per_item_ms": per_item[large],
        "small_per_item_ms": per_item[small],
        "ratio": round(per_item[large] / per_item[small], 2),
    }
    yield from linear_case(services, ours, size)
