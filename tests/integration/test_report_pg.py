"""``orchestrator report`` on PostgreSQL: the same seeded history gives the same figures as on
SQLite, and the portable percentile agrees with PostgreSQL's own ``percentile_cont``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.report.compute import build_report
from orchestrator.store import Repository
from orchestrator.store import tables as t
from orchestrator.store.stats import percentiles, seconds_between
from tests.conftest import Cluster
from tests.report_history import AT, check_report, history, seed

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_repo(database_url: str) -> Iterator[Repository]:
    repo = Repository.from_url(database_url)
    seed(repo, history())
    yield repo
    repo.engine.dispose()


def test_the_figures_are_those_of_the_seeded_history(pg_repo: Repository) -> None:
    report = build_report(pg_repo, 7 * 86400.0, at=AT)
    check_report(report, history(), AT - timedelta(days=7))


def test_the_portable_percentile_is_percentile_cont(pg_repo: Repository) -> None:
    a = t.attempts.c
    value = seconds_between("postgresql", a.started_at, a.finished_at)
    durations = sa.select(a.number, value.label("value")).subquery()
    with pg_repo.transaction() as tx:
        ours = {r.number: (r.p50, r.p95) for r in tx.c.execute(percentiles("postgresql", durations, ["number"]))}
        native = {
            r[0]: (r[1], r[2])
            for r in tx.c.execute(
                sa.select(
                    durations.c.number,
                    sa.func.percentile_cont(0.5).within_group(durations.c.value),
                    sa.func.percentile_cont(0.95).within_group(durations.c.value),
                ).group_by(durations.c.number)
            )
        }
    assert ours.keys() == native.keys()
    for number, (p50, p95) in native.items():
        assert ours[number] == (pytest.approx(p50), pytest.approx(p95))


def test_the_command_on_postgresql(cluster: Cluster) -> None:
    seed(cluster.repo, history())
    result = cluster.cli("report", "--since", "3650d", "--format", "json", "--workflow", "shop")
    assert result.returncode == 0, result.stderr
    (shop,) = json.loads(result.stdout)["workflows"]
    assert (shop["runs"], shop["success_rate"], shop["critical_path"]["bottleneck"]) == (5, 0.8, "price")
