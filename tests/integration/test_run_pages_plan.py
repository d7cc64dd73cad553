"""The run list's cursor pages on PostgreSQL: a page deep in the list is a range scan on
ix_runs_created_at_id, not a scan of every newer run (docs/http-api.md, GET /api/v1/runs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.runtime.pages import encode_cursor, runs_page
from orchestrator.store import Repository
from orchestrator.store.database import get_engine
from orchestrator.store.pages import RunFilter, runs_query

pytestmark = pytest.mark.integration
RUNS = 3000
SEED = f"""
INSERT INTO definitions VALUES ('v1', 'wf', '{{}}', now());
INSERT INTO runs (id, workflow, version, status, inputs, created_at)
SELECT 'r-' || lpad(i::text, 5, '0'), 'wf-' || mod(i, 3), 'v1',
       (ARRAY['succeeded', 'failed', 'running'])[1 + mod(i, 3)], '{{}}'::jsonb,
       timestamptz '2026-01-01' + ((i / 3) || ' seconds')::interval
FROM generate_series(1, {RUNS}) i;
ANALYZE runs;
"""


@pytest.fixture
def seeded(database_url: str) -> str:
    """``RUNS`` runs, in threes created at the same moment."""
    with get_engine(database_url).begin() as c:
        for statement in SEED.split(";"):
            if statement.strip():
                c.exec_driver_sql(statement)
    return database_url


def _key(url: str, depth: int, where: str = "TRUE") -> tuple[datetime, str]:
    """The (created_at, id) of the run ``depth`` places down the list, newest first."""
    with get_engine(url).connect() as c:
        query = (
            f"SELECT created_at, id FROM runs WHERE {where} ORDER BY created_at DESC, id DESC OFFSET {depth} LIMIT 1"
        )
        at, run_id = c.exec_driver_sql(query).one()
    return at, run_id


def _plan(url: str, query: sa.Select[Any]) -> dict[str, Any]:
    engine = get_engine(url)
    compiled = query.compile(dialect=engine.dialect)
    with engine.connect() as c:
        found = c.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", compiled.params).scalar_one()
    plan: dict[str, Any] = found[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_a_deep_page_reads_the_rows_it_shows_not_every_newer_one(seeded: str) -> None:
    after = _key(seeded, RUNS // 2)
    nodes = _nodes(_plan(seeded, runs_query(RunFilter(), 51, after)))
    removed = sum(n.get("Rows Removed by Filter", 0) for n in nodes)
    scanned = [n for n in nodes if n.get("Index Name") == "ix_runs_created_at_id"]
    assert removed <= 3, nodes  # at most the runs created at the key's very moment
    assert scanned and "created_at" in scanned[0].get("Index Cond", ""), nodes


@pytest.mark.parametrize("where", [RunFilter(workflow="wf-1"), RunFilter(status="failed")])
def test_a_filtered_deep_page_reads_an_index_range(seeded: str, where: RunFilter) -> None:
    column, value = ("workflow", where.workflow) if where.workflow else ("status", where.status)
    after = _key(seeded, RUNS // 6, f"{column} = '{value}'")
    nodes = _nodes(_plan(seeded, runs_query(where, 51, after)))
    removed = sum(n.get("Rows Removed by Filter", 0) for n in nodes)
    assert removed <= 3 * 51, nodes  # the filter's share of one page's range, not the runs before it
    assert any("created_at" in n.get("Index Cond", "") for n in nodes), nodes


def test_the_pages_still_cover_every_run_once_in_order(seeded: str) -> None:
    repo = Repository.from_url(seeded)
    seen: list[str] = []
    cursor = encode_cursor(*_key(seeded, RUNS - 400))
    while cursor is not None:
        page = runs_page(repo, RunFilter(), 37, cursor)
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
    with get_engine(seeded).connect() as c:
        query = f"SELECT id FROM runs ORDER BY created_at DESC, id DESC OFFSET {RUNS - 399}"
        expected = [r[0] for r in c.exec_driver_sql(query)]
    assert seen == expected and len(seen) == 399
