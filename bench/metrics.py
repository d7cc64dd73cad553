"""metrics_scrape and report_week: what a ``/metrics`` scrape (uncached) and a week's report cost
on a store of n step rows (n / 5 runs of five steps, one in ten retried once, three events per
attempt), seeded in PostgreSQL with ``generate_series``. Floors: ``ours_s`` alone, the median of
five."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from bench.env import Services
from orchestrator.report.compute import build_report
from orchestrator.report.metrics import StoreCollector
from orchestrator.store import Repository

_SEED = [
    """INSERT INTO definitions (version, name, snapshot, created_at) VALUES ('bench-metrics', 'bench-metrics',
       '{"name": "bench-metrics", "steps": {"s0": {}, "s1": {"needs": ["s0"]}, "s2": {"needs": ["s1"]},
         "s3": {"needs": ["s1"]}, "s4": {"needs": ["s2", "s3"]}}}', now())""",
    """INSERT INTO runs (id, workflow, version, status, inputs, created_at, started_at, finished_at)
       SELECT md5(i::text)::uuid::text, 'bench-metrics-' || (i % 4), 'bench-metrics',
              CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, '{}'::jsonb,
              now() - make_interval(secs => i * 20), now() - make_interval(secs => i * 20),
              now() - make_interval(secs => i * 20 - 11)
       FROM generate_series(1, :runs) AS i""",
    """INSERT INTO step_runs (run_id, step, item_index, status, attempts, queued_at, started_at, finished_at)
       SELECT r.id, 's' || k, -1, 'succeeded', CASE WHEN (k + length(r.id) + ascii(r.id)) % 10 = 0 THEN 2 ELSE 1 END,
              r.started_at + make_interval(secs => k * 2), r.started_at + make_interval(secs => k * 2 + 0.1),
              r.started_at + make_interval(secs => k * 2 + 1 + (ascii(r.id) % 7) / 10.0)
       FROM runs r CROSS JOIN generate_series(0, 4) AS k WHERE r.version = 'bench-metrics'""",
    """INSERT INTO attempts (step_run_id, number, status, started_at, finished_at)
       SELECT s.id, n, CASE WHEN n < s.attempts THEN 'failed' ELSE 'succeeded' END, s.started_at, s.finished_at
       FROM step_runs s JOIN runs r ON r.id = s.run_id CROSS JOIN generate_series(1, 2) AS n
       WHERE n <= s.attempts AND r.version = 'bench-metrics'""",
    """INSERT INTO events (run_id, step, kind, at)
       SELECT s.run_id, s.step, e.kind, CASE e.kind WHEN 'step.queued' THEN s.queued_at
              WHEN 'step.running' THEN s.started_at ELSE s.finished_at END
       FROM step_runs s JOIN runs r ON r.id = s.run_id
       CROSS JOIN (VALUES ('step.queued'), ('step.running'), ('step.succeeded')) AS e(kind)
       WHERE r.version = 'bench-metrics'""",
    "ANALYZE",
]


def seed(repo: Repository, step_rows: int) -> None:
    with repo.engine.begin() as c:
        for statement in _SEED[:-1]:
            c.execute(sa.text(statement), {"runs": step_rows // 5})
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text(_SEED[-1]))


def median_of(repeats: int, work: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    n = 10_000 if quick else 100_000
    repo = Repository.from_url(services.database_url)
    seed(repo, n)
    collector = StoreCollector(repo, lambda: [], cache_s=0.0)
    scrape = median_of(5, lambda: list(collector.collect()))
    yield {"name": "metrics_scrape", "n": n, "ours_s": round(scrape, 4)}
    report = median_of(5, lambda: build_report(repo, 7 * 86400.0))
    yield {"name": "report_week", "n": n, "ours_s": round(report, 4)}
