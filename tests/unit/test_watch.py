"""Following a run from its event log: the watch shows what ``run_view`` shows, at the cost of what is new."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.errors import NotFound
from orchestrator.runtime import views
from orchestrator.runtime.views import RunWatch, run_view
from orchestrator.status import RunStatus, StepStatus
from orchestrator.store import Repository, now
from orchestrator.store.migrate import upgrade

RUN = "run-1"
SNAPSHOT = {"name": "order", "steps": {"fetch": {}, "price": {}, "charge": {}, "notify": {}}}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    """A migrated SQLite store holding one running run: fetch, then a foreach price, then charge and notify."""
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    upgrade(url)
    repo = Repository.from_url(url)
    with repo.transaction() as tx:
        tx.save_definition("v1", "order", SNAPSHOT)
        tx.insert_run(RUN, "order", "v1", {"order_id": "A1"}, None, {"fetch": 0, "price": 1, "charge": 1, "notify": 1})
        tx.update_run(RUN, status=RunStatus.RUNNING, started_at=now())
    return repo


def record(
    repo: Repository, step: str, kind: str, detail: dict[str, Any] | None = None, item: int | None = None, **row: Any
) -> None:
    """One transition as the runtime makes it: the row changed and its event logged, in one transaction."""
    with repo.transaction() as tx:
        if item is None:
            target = tx.steps(RUN)[step]
        else:
            target = next(i for i in tx.items(RUN, step) if i.item_index == item)
        if row:
            tx.update_step(target.id, **row)
        event = {"run_id": RUN, "step": step, "item_index": item, "kind": kind, "detail": detail, "at": now()}
        tx.add_events([event])


def expand(repo: Repository, step: str, inputs: list[Any]) -> None:
    with repo.transaction() as tx:
        tx.insert_items(RUN, step, inputs)
        tx.update_step(tx.steps(RUN)[step].id, status=StepStatus.RUNNING, inputs={"items": len(inputs)})
        event = {"kind": "step.expanded", "detail": {"items": len(inputs)}, "at": now()}
        tx.add_events([{"run_id": RUN, "step": step, "item_index": None, **event}])


def shown(view: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What the live table shows of each step."""
    return {
        name: (s["status"], s["attempts"], s.get("items"), s["error"], s["reason"], s["output"])
        for name, s in view["steps"].items()
    }


def assert_same(watch: RunWatch, repo: Repository) -> None:
    assert shown(watch.poll()) == shown(run_view(repo, RUN))


@pytest.fixture
def statements(repo: Repository) -> Iterator[list[str]]:
    """Every SQL statement the store runs while the test looks."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(repo.engine, "before_cursor_execute", listen)
    yield seen
    sa.event.remove(repo.engine, "before_cursor_execute", listen)


def test_the_watch_shows_what_run_view_shows_through_a_whole_run(repo: Repository) -> None:
    watch = RunWatch(repo, RUN)
    assert watch.view == run_view(repo, RUN)

    # A step queued, claimed, retried after an error, claimed again, and succeeded with an output
    record(repo, "fetch", "step.queued", status=StepStatus.QUEUED)
    assert_same(watch, repo)
    record(repo, "fetch", "step.running", {"attempt": 1, "worker": "w1"}, status=StepStatus.RUNNING, attempts=1)
    assert_same(watch, repo)
    retry = {"attempt": 1, "error": "ValueError: flaky", "delay_s": 0.1}
    record(repo, "fetch", "step.retrying", retry, status=StepStatus.QUEUED, error="ValueError: flaky")
    assert_same(watch, repo)
    record(repo, "fetch", "step.running", {"attempt": 2}, status=StepStatus.RUNNING, attempts=2, error=None)
    record(repo, "fetch", "step.succeeded", status=StepStatus.SUCCEEDED, output={"items": [3, 1, 4]})
    assert_same(watch, repo)
    assert watch.view["steps"]["fetch"]["output"] == {"items": [3, 1, 4]}

    # A foreach expands; its items are queued, claimed, deferred (giving the attempt back), failed, succeeded
    expand(repo, "price", [3, 1, 4])
    assert_same(watch, repo)
    assert watch.view["steps"]["price"]["items"] == {"total": 3, "pending": 3}
    for index in range(3):
        record(repo, "price", "step.queued", item=index, status=StepStatus.QUEUED)
    record(repo, "price", "step.running", {"attempt": 1}, item=0, status=StepStatus.RUNNING, attempts=1)
    record(repo, "price", "step.running", {"attempt": 1}, item=1, status=StepStatus.RUNNING, attempts=1)
    assert_same(watch, repo)
    record(repo, "price", "step.deferred", {"why": "circuit open"}, item=1, status=StepStatus.QUEUED, attempts=0)
    record(repo, "price", "step.succeeded", item=0, status=StepStatus.SUCCEEDED, output=30)
    assert_same(watch, repo)
    record(repo, "price", "step.woken", {"why": "its wait is over"}, item=1)
    record(repo, "price", "step.running", {"attempt": 1}, item=1, status=StepStatus.RUNNING, attempts=1)
    record(repo, "price", "step.running", {"attempt": 1}, item=2, status=StepStatus.RUNNING, attempts=1)
    record(repo, "price", "step.succeeded", item=1, status=StepStatus.SUCCEEDED, output=10)
    record(
        repo, "price", "step.failed", {"error": "KeyError: 4"}, item=2, status=StepStatus.FAILED, error="KeyError: 4"
    )
    assert_same(watch, repo)
    assert watch.view["steps"]["price"]["items"] == {"total": 3, "failed": 1, "succeeded": 2}

    # The foreach fails, the run fails fast: charge is cancelled, notify skipped; then the run ends
    failed = {"error": "item 2: KeyError: 4"}
    record(repo, "price", "step.failed", failed, status=StepStatus.FAILED, error=failed["error"])
    cancelled = {"reason": "the run failed"}
    record(repo, "charge", "step.cancelled", cancelled, status=StepStatus.CANCELLED, reason=cancelled["reason"])
    skipped = {"reason": "need price failed"}
    record(repo, "notify", "step.skipped", skipped, status=StepStatus.SKIPPED, reason=skipped["reason"])
    record(repo, "notify", "step.unheard.of", {"status": "succeeded"})  # unknown kinds change nothing
    assert_same(watch, repo)
    assert watch.view["steps"]["price"]["attempts"] == 3

    with repo.transaction() as tx:
        tx.update_run(RUN, status=RunStatus.FAILED, error="price: item 2: KeyError: 4", finished_at=now())
    final = watch.poll()
    assert final == run_view(repo, RUN)
    assert watch.done and watch.poll() is final


def test_a_watch_started_mid_run_counts_items_it_did_not_see_change(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "_EVENT_PAGE", 3)  # the log is read in several pages
    # Given a foreach half done before anyone watches
    record(repo, "fetch", "step.succeeded", status=StepStatus.SUCCEEDED, output={"items": [1, 2, 3, 4]})
    expand(repo, "price", [1, 2, 3, 4])
    for index in range(2):
        record(repo, "price", "step.queued", item=index, status=StepStatus.QUEUED)
        record(repo, "price", "step.running", {"attempt": 1}, item=index, status=StepStatus.RUNNING, attempts=1)
    record(repo, "price", "step.retrying", {"error": "boom"}, item=0, status=StepStatus.QUEUED, error="boom")
    watch = RunWatch(repo, RUN)
    assert watch.view == run_view(repo, RUN)

    # When those items move on, and the others start
    record(repo, "price", "step.running", {"attempt": 2}, item=0, status=StepStatus.RUNNING, attempts=2)
    record(repo, "price", "step.succeeded", item=1, status=StepStatus.SUCCEEDED, output=2)
    record(repo, "price", "step.queued", item=3, status=StepStatus.QUEUED)

    # Then the counts moved from the right statuses, and attempts add up over all items
    assert_same(watch, repo)
    assert watch.view["steps"]["price"]["items"] == {
        "total": 4,
        "pending": 1,
        "queued": 1,
        "running": 1,
        "succeeded": 1,
    }
    assert watch.view["steps"]["price"]["attempts"] == 3


def test_a_reopened_step_shows_its_new_status_without_its_old_error(repo: Repository) -> None:
    record(repo, "fetch", "step.failed", {"error": "ValueError: x"}, status=StepStatus.FAILED, error="ValueError: x")
    record(repo, "price", "step.failed", {"error": "EvaluationError: y"}, status=StepStatus.FAILED, error="y")
    cancelled = {"reason": "the run failed"}
    record(repo, "charge", "step.cancelled", cancelled, status=StepStatus.CANCELLED, reason=cancelled["reason"])
    watch = RunWatch(repo, RUN)

    # A failed step replayed with its inputs is queued again, its error gone
    record(repo, "fetch", "step.replayed", status=StepStatus.QUEUED, error=None)
    # One to evaluate again goes back to pending; what the failure cancelled goes back too
    record(repo, "price", "step.reopened", {"status": "pending"}, status=StepStatus.PENDING, error=None)
    record(repo, "charge", "step.reopened", {"status": "pending"}, status=StepStatus.PENDING, reason=None)
    assert_same(watch, repo)
    assert watch.view["steps"]["fetch"]["error"] is None


def test_a_poll_reads_the_run_and_its_new_events_never_all_the_steps(repo: Repository, statements: list[str]) -> None:
    expand(repo, "price", list(range(50)))
    watch = RunWatch(repo, RUN)
    record(repo, "price", "step.queued", item=7, status=StepStatus.QUEUED)
    watch.poll()

    # A poll with nothing new reads the run row and the event log, and no step row
    statements.clear()
    watch.poll()
    watch.poll()
    assert statements and not [s for s in statements if "step_runs" in s]

    # Item events are applied from the log alone; a step row's success loads that one step's output
    record(repo, "price", "step.running", {"attempt": 1}, item=7, status=StepStatus.RUNNING, attempts=1)
    statements.clear()
    watch.poll()
    assert not [s for s in statements if "step_runs" in s]
    record(repo, "fetch", "step.succeeded", status=StepStatus.SUCCEEDED, output={"items": []})
    statements.clear()
    watch.poll()
    assert len([s for s in statements if "step_runs" in s]) == 1
    assert watch.view["steps"]["fetch"]["output"] == {"items": []}

    # An event already applied is not applied again (nor its output loaded again)
    statements.clear()
    watch.poll()
    assert not [s for s in statements if "step_runs" in s]


def test_a_late_event_with_a_lower_id_is_still_applied(repo: Repository) -> None:
    # Given an event another writer numbered first but committed after a poll had moved past it
    # (PostgreSQL numbers rows before they commit; here the row is simply written with that id)
    watch = RunWatch(repo, RUN)
    record(repo, "fetch", "step.queued", status=StepStatus.QUEUED)
    record(repo, "charge", "step.queued", status=StepStatus.QUEUED)
    with repo.transaction() as tx:
        late = tx.events_after(RUN, 0, 10)[-2]["id"]
        tx.c.execute(sa.text("DELETE FROM events WHERE id = :id"), {"id": late})
    watch.poll()
    with repo.transaction() as tx:
        at = now()
        event = {"id": late, "run_id": RUN, "step": "fetch", "item_index": None, "kind": "step.queued", "at": at}
        tx.add_events([{**event, "detail": None}])
    # When the next poll runs, then the late event shows, and none is applied twice
    assert watch.poll()["steps"]["fetch"]["status"] == "queued"
    assert_same(watch, repo)


def test_an_unknown_run_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound):
        RunWatch(repo, "no-such-run")
