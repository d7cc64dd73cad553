"""The /metrics collector on SQLite over the seeded history: counts, histogram buckets and sums."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.report.metrics import StoreCollector
from orchestrator.store import Repository
from tests.report_history import history, seed


def scrape(repo: Repository) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(repo, lambda: [{"name": "pay-api", "state": "open"}], cache_s=0.0))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_seeded_history_as_metrics(repo: Repository) -> None:
    seed(repo, history())
    got = scrape(repo)

    def value(metric: str, /, **labels: str) -> float | None:
        return got.get((metric, tuple(sorted(labels.items()))))

    assert value("orchestrator_runs_total", workflow="shop", status="succeeded") == 4
    assert value("orchestrator_runs_total", workflow="shop", status="failed") == 1
    assert value("orchestrator_runs_total", workflow="mail", status="succeeded") == 4  # all history, not a window
    assert value("orchestrator_steps_total", workflow="shop", step="price", status="failed") == 1
    assert value("orchestrator_steps_total", workflow="shop", step="price", status="succeeded") == 4
    # price's attempts ran 4, 8, 12 and 16 s, then 1 and 1.5 s in the failed run
    assert value("orchestrator_step_duration_seconds_count", workflow="shop", step="price") == 6
    assert value("orchestrator_step_duration_seconds_sum", workflow="shop", step="price") == pytest.approx(42.5)
    buckets = {
        le: value("orchestrator_step_duration_seconds_bucket", workflow="shop", step="price", le=le)
        for le in ("1.0", "2.5", "5.0", "10.0", "30.0", "+Inf")
    }
    assert buckets == {"1.0": 1, "2.5": 2, "5.0": 3, "10.0": 4, "30.0": 6, "+Inf": 6}
    # one latest delivery per step row: 16 in the good runs, 3 in the failed one
    assert value("orchestrator_step_queue_seconds_count", workflow="shop") == 19
    assert value("orchestrator_step_queue_seconds_sum", workflow="shop") == pytest.approx(21.25)
    assert value("orchestrator_breaker_open", name="pay-api") == 1
    assert value("orchestrator_dead_letters_open") == 0
    assert value("orchestrator_approvals_waiting") == 0
