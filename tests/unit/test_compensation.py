"""Compensation (sagas) in-process on SQLite: a failed run undoes its succeeded steps, the last to
succeed first, each compensation retried and dead-lettered like any step."""

from __future__ import annotations

from orchestrator.definition import build_plan, load_text
from orchestrator.runtime import operations
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who
from orchestrator.runtime.views import run_view
from tests.unit.harness import Ledger, drive


def submit(engine: Engine, text: str) -> str:
    run_id = operations.submit(engine, build_plan(load_text(text).workflow, check_tasks=False), {}).run_id
    drive(engine)
    return run_id


SAGA = """
name: saga
steps:
  reserve:
    task: m:reserve
    with: {sku: apple}
    compensate: {task: m:release, with: {reservation: "${{ output.sku }}"}}
  charge:
    needs: reserve
    task: m:charge
    with: {amount: 5}
    compensate: {task: m:refund, with: {amount: "${{ output.amount }}", sku: "${{ steps.reserve.output.sku }}"}}
  ship:
    needs: charge
    task: m:boom
"""


def test_a_failed_run_undoes_its_steps_latest_first_with_their_outputs(engine: Engine, ledger: Ledger) -> None:
    run_id = submit(engine, SAGA)

    view = run_view(engine.repo, run_id)
    assert view["status"] == "failed"
    assert view["error"] == "ship: RuntimeError: boom"
    assert view["compensated"] is True
    assert view["compensation"] == {"steps": ["charge", "reserve"]}
    assert ledger.calls == ["m:reserve", "m:charge", "m:boom", "m:refund", "m:release"]
    assert view["steps"]["compensate:charge"]["output"] == {"task": "m:refund", "amount": 5, "sku": "apple"}
    assert view["steps"]["compensate:reserve"]["output"] == {"task": "m:release", "reservation": "apple"}


def test_parallel_branches_are_undone_in_reverse_order_of_completion(engine: Engine, ledger: Ledger) -> None:
    text = """
name: fan
steps:
  a: {task: m:a, compensate: {task: m:undo_a}}
  b: {task: m:b, compensate: {task: m:undo_b}}
  c: {task: m:c, needs: [a], compensate: {task: m:undo_c}}
  fail: {task: m:boom, needs: [b, c]}
"""
    run_id = submit(engine, text)

    done = [c for c in ledger.calls if c in ("m:a", "m:b", "m:c")]
    undone = [c.replace("undo_", "") for c in ledger.calls if "undo_" in c]
    assert undone == list(reversed(done))
    assert run_view(engine.repo, run_id)["compensated"] is True


def test_a_compensation_is_retried_then_dead_lettered_and_named(engine: Engine, ledger: Ledger) -> None:
    text = SAGA.replace(
        "compensate: {task: m:refund,", "compensate: {retry: {max_attempts: 2, delay: 1s}, task: m:boom,"
    )
    run_id = submit(engine, text)

    view = run_view(engine.repo, run_id, with_attempts=True)
    assert view["status"] == "failed"
    assert view["compensated"] is False
    assert view["compensation"]["failed"] == "compensate:charge"
    assert view["compensation"]["error"] == "RuntimeError: boom"
    assert [a["status"] for a in view["steps"]["compensate:charge"]["attempt_log"]] == ["failed", "failed"]
    assert "m:release" not in ledger.calls, "undoing stops at the compensation that failed"
    with engine.repo.transaction() as tx:
        steps = [e.step for e in tx.dead_letters(run_id=run_id)]
    assert sorted(steps) == ["compensate:charge", "ship"]


def test_a_run_that_succeeds_undoes_nothing(engine: Engine, ledger: Ledger) -> None:
    run_id = submit(engine, SAGA.replace("task: m:boom", "task: m:ship"))
    view = run_view(engine.repo, run_id)
    assert view["status"] == "succeeded" and "compensated" not in view
    assert ledger.calls == ["m:reserve", "m:charge", "m:ship"]


def test_cancelling_compensates_when_the_workflow_says_so(engine: Engine, ledger: Ledger) -> None:
    text = """
name: hold
compensate_on_cancel: true
steps:
  book: {task: m:book, compensate: {task: m:unbook}}
  wait: {needs: book, wait: {event: never}}
"""
    run_id = submit(engine, text)
    operations.cancel(engine, run_id, Who("ops"))
    drive(engine)

    view = run_view(engine.repo, run_id)
    assert view["status"] == "cancelled"
    assert view["compensated"] is True
    assert ledger.calls == ["m:book", "m:unbook"]

    # Without compensate_on_cancel, a cancel undoes nothing
    plain = submit(engine, text.replace("compensate_on_cancel: true\n", "").replace("name: hold", "name: plain"))
    operations.cancel(engine, plain, Who("ops"))
    drive(engine)
    assert run_view(engine.repo, plain)["status"] == "cancelled"
    assert ledger.calls == ["m:book", "m:unbook", "m:book"]
