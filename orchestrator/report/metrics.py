"""Prometheus metrics computed from the state store when scraped.

Every worker process (prefork children included) writes its results to the store, so the store
already holds the fleet's totals: a scrape runs a few aggregate queries there instead of summing
per-process counters (which prefork children would each hold apart, and lose on restart). Labels
are workflow, step, status and breaker names, never run ids, so the series stay bounded. The
result is kept for ``DEFAULT_METRICS_CACHE_S`` so that several scrapers do not multiply the cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.settings import DEFAULT_METRICS_CACHE_S
from orchestrator.store import Repository

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
QUEUE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_ENDED_RUN = frozenset({"succeeded", "failed", "cancelled"})
_ENDED_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled"})

Breakers = Callable[[], list[dict[str, Any]]]  # what ``breakers list --json`` prints


class StoreCollector(Collector):
    """The orchestrator's metrics, read from the store at most once per ``cache_s``."""

    def __init__(self, repo: Repository, breakers: Breakers, cache_s: float = DEFAULT_METRICS_CACHE_S) -> None:
        self.repo = repo
        self.breakers = breakers
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= self.cache_s:
                self._cached = (time.monotonic(), self._read())
            yield from self._cached[1]

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no scrape when registered: the store may not be reachable yet

    def _read(self) -> list[Metric]:
        with self.repo.transaction() as tx:
            runs = tx.runs_by_status()
            steps = tx.step_rows(QUEUE_BUCKETS)
            durations = tx.attempt_histogram(STEP_BUCKETS)
            dead = tx.dead_letters_open()
            approvals = tx.approvals_waiting()
        return [
            *_run_metrics(runs),
            _step_counter(steps),
            _histogram(
                "orchestrator_step_duration_seconds",
                "How long step attempts ran.",
                ["workflow", "step"],
                durations,
                STEP_BUCKETS,
            ),
            _histogram(
                "orchestrator_step_queue_seconds",
                "How long steps waited from due to running.",
                ["workflow"],
                _queues(steps, len(QUEUE_BUCKETS)),
                QUEUE_BUCKETS,
            ),
            _gauge("orchestrator_dead_letters_open", "Dead-letter entries not yet replayed or discarded.", dead),
            _gauge("orchestrator_approvals_waiting", "Approval steps waiting for a decision.", approvals),
            _breaker_gauge(self.breakers()),
        ]


def _run_metrics(rows: Sequence[tuple[str, str, int]]) -> list[Metric]:
    total = CounterMetricFamily("orchestrator_runs", "Runs that ended, by outcome.", labels=["workflow", "status"])
    active = GaugeMetricFamily("orchestrator_runs_active", "Runs not ended yet.", labels=["workflow", "status"])
    for workflow, status, count in rows:
        (total if status in _ENDED_RUN else active).add_metric([workflow, status], count)
    return [total, active]


def _step_counter(rows: Sequence[dict[str, Any]]) -> Metric:
    found = CounterMetricFamily(
        "orchestrator_steps", "Steps that ended, by outcome.", labels=["workflow", "step", "status"]
    )
    for row in rows:
        if row["status"] in _ENDED_STEP and row["steps"]:
            found.add_metric([row["workflow"], row["step"], row["status"]], int(row["steps"]))
    return found


def _queues(rows: Sequence[dict[str, Any]], bounds: int) -> list[dict[str, Any]]:
    """The step rows' queue waits summed per workflow (the query groups them finer, by step and status)."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = found.setdefault(row["workflow"], {"workflow": row["workflow"], "count": 0, "sum": 0.0})
        into["count"] += int(row["queued"] or 0)
        into["sum"] += float(row["queued_sum"] or 0.0)
        for i in range(bounds):
            into[f"le_{i}"] = into.get(f"le_{i}", 0) + int(row[f"le_{i}"] or 0)
    return [q for q in found.values() if q["count"]]


def _histogram(
    name: str, documentation: str, labels: list[str], rows: Sequence[dict[str, Any]], bounds: Sequence[float]
) -> Metric:
    found = HistogramMetricFamily(name, documentation, labels=labels)
    for row in rows:
        buckets = [(_bound(b), float(row[f"le_{i}"] or 0)) for i, b in enumerate(bounds)]
        buckets.append(("+Inf", float(row["count"])))
        found.add_metric([row[label] for label in labels], buckets, float(row["sum"] or 0.0))
    return found


def _bound(value: float) -> str:
    return f"{value:g}" if value < 1 else f"{value:.1f}"


def _gauge(name: str, documentation: str, value: int) -> Metric:
    found = GaugeMetricFamily(name, documentation)
    found.add_metric([], value)
    return found


def _breaker_gauge(breakers: list[dict[str, Any]]) -> Metric:
    found = GaugeMetricFamily("orchestrator_breaker_open", "1 while a circuit breaker is open.", labels=["name"])
    for breaker in breakers:
        found.add_metric([breaker["name"]], 1 if breaker["state"] == "open" else 0)
    return found
