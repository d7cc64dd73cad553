"""The API's paged views on SQLite: the run list pages by (created_at, id) with no gap and no
repeat, even when runs share a creation time; a step's detail is its ``status --json`` view with
a page of its foreach items; cursors and pages out of range are refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.definition import build_plan, load_text
from orchestrator.errors import NotFound, UsageError
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.pages import decode_cursor, encode_cursor, runs_page, step_detail
from orchestrator.runtime.views import run_view
from orchestrator.store import Repository
from orchestrator.store.pages import RunFilter
from tests.unit.harness import drive

FAN = """
name: fan
steps:
  make: {task: "shop:make", with: {n: 3}}
  each: {needs: [make], foreach: "${{ inputs.items }}", task: "shop:price", with: {item: "${{ item }}"}}
"""
SAME_TIME = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def fill(repo: Repository, count: int) -> list[str]:
    """``count`` runs, in threes created at the very same moment."""
    ids = [f"run-{i:02d}" for i in range(count)]
    with repo.transaction() as tx:
        tx.save_definition("v1", "wf", {"name": "wf", "steps": {}})
        for i, run_id in enumerate(ids):
            tx.insert_run(run_id, "wf", "v1", {}, None, {})
            tx.update_run(run_id, created_at=SAME_TIME.replace(minute=i // 3))
    return ids


def test_pages_cover_every_run_once_newest_first_through_equal_times(repo: Repository) -> None:
    ids = fill(repo, 11)
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        page = runs_page(repo, RunFilter(workflow="wf"), 4, cursor)
        seen += page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["run_id"] for r in seen] == sorted(ids, key=lambda r: (int(r[4:]) // 3, r), reverse=True)
    assert len(seen) == 11


def test_since_and_until_bound_the_creation_time(repo: Repository) -> None:
    fill(repo, 9)
    since = runs_page(repo, RunFilter(since=SAME_TIME.replace(minute=1)), 50)
    assert {r["run_id"] for r in since["runs"]} == {f"run-{i:02d}" for i in range(3, 9)}
    until = runs_page(repo, RunFilter(until=datetime(2026, 12, 1, 9, 1)), 50)  # no offset: UTC
    assert {r["run_id"] for r in until["runs"]} == {"run-00", "run-01", "run-02"}


OUT_OF_RANGE = "eyJ0IjogIjk5OTktMTItMzFUMjM6NTk6NTktMjM6MDAiLCAiaWQiOiAieCJ9"  # 9999-12-31T23:59:59-23:00


@pytest.mark.parametrize(
    "cursor", ["garbage", "", "e30", encode_cursor(SAME_TIME, "x")[:-3], "!!!!", "bnVsbA", OUT_OF_RANGE]
)
def test_a_cursor_this_api_did_not_hand_out_is_refused(cursor: str) -> None:
    with pytest.raises(UsageError, match="cursor"):
        decode_cursor(cursor)


def test_a_time_out_of_range_in_utc_is_refused(repo: Repository) -> None:
    late = datetime.fromisoformat("9999-12-31T23:59:59-23:00")
    with pytest.raises(UsageError, match="since"):
        runs_page(repo, RunFilter(since=late), 5)


def test_a_cursor_holds_the_key_it_was_made_of() -> None:
    assert decode_cursor(encode_cursor(SAME_TIME, "run-7")) == (SAME_TIME, "run-7")


@pytest.mark.parametrize("limit", [0, 501])
def test_a_page_size_out_of_range_is_refused(repo: Repository, limit: int) -> None:
    with pytest.raises(UsageError, match="limit"):
        runs_page(repo, RunFilter(), limit)


def test_a_step_detail_is_its_view_with_a_page_of_its_items(engine: Engine) -> None:
    plan = build_plan(load_text(FAN).workflow, check_tasks=False)
    run_id = operations.submit(engine, plan, {"items": list(range(30))}).run_id
    drive(engine)
    detail = step_detail(engine.repo, run_id, "each", offset=10, limit=5)
    whole = run_view(engine.repo, run_id, with_attempts=True)["steps"]["each"]
    assert [i["index"] for i in detail["item_list"]] == [10, 11, 12, 13, 14]
    assert detail["item_list"][0]["output"] == {"task": "shop:price", "item": 10}
    assert sorted(detail["item_attempts"], key=int) == ["10", "11", "12", "13", "14"]
    assert detail["items"] == whole["items"] == {"total": 30, "succeeded": 30}
    shared = {k: v for k, v in detail.items() if k not in ("item_list", "item_attempts", "inputs", "traceback")}
    assert shared == {k: v for k, v in whole.items() if k != "item_attempts"}
    plain = step_detail(engine.repo, run_id, "make")
    assert "item_list" not in plain and plain["inputs"] == {"n": 3} and plain["traceback"] is None
    assert len(plain["attempt_log"]) == 1
    with pytest.raises(NotFound):
        step_detail(engine.repo, run_id, "nope")
    with pytest.raises(NotFound):
        step_detail(engine.repo, "no-run", "each")
    with pytest.raises(UsageError):
        step_detail(engine.repo, run_id, "each", offset=-1)
