"""Waits, approvals, pause/resume and repairs in-process on SQLite: the state machine each drives,
with a recording transport standing in for the broker (the integration tier runs the real one)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestrator.definition import WorkflowBuilder, build_plan
from orchestrator.errors import NotFound, PayloadTooLarge, Refused, UsageError
from orchestrator.runtime import approval, operations, repair
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.operations import Who
from orchestrator.runtime.reconciler import reconcile
from orchestrator.runtime.signal import signal
from orchestrator.runtime.waking import wake_step
from orchestrator.store import Repository, now
from tests.unit.harness import Ledger, drive, state

ALICE, BOB, EVE = Who("alice"), Who("bob"), Who("eve")


def start(engine: Engine, wf: WorkflowBuilder, inputs: dict[str, Any] | None = None) -> str:
    run_id = operations.submit(engine, build_plan(wf.build(), check_tasks=False), inputs or {}).run_id
    drive(engine)
    return run_id


def output(engine: Engine, run_id: str, step: str) -> Any:
    with engine.repo.transaction() as tx:
        return tx.steps(run_id, [step])[step].output


def payment(key: str = "${{ inputs.order }}", timeout: str | None = None) -> WorkflowBuilder:
    wf = WorkflowBuilder("pay")
    pay = wf.wait("pay", event="payment.confirmed", key=key, timeout=timeout)
    wf.step("ship", "m:ship", needs=[pay], with_={"paid": pay.output})
    return wf


def test_a_signal_after_the_wait_completes_it_with_its_data(engine: Engine, ledger: Ledger) -> None:
    run_id = start(engine, payment(), {"order": "A1"})
    assert state(engine, run_id) == ("running", {"pay": "waiting", "ship": "pending"})
    assert ledger.calls == []

    done = signal(engine, "payment.confirmed", "A1", {"amount": 5})
    drive(engine)

    assert done.delivered == [(run_id, "pay")] and not done.kept
    assert state(engine, run_id) == ("succeeded", {"pay": "succeeded", "ship": "succeeded"})
    assert output(engine, run_id, "ship") == {"task": "m:ship", "paid": {"amount": 5}}


def test_a_signal_before_the_wait_is_kept_and_delivered_when_it_waits(engine: Engine) -> None:
    with pytest.raises(UsageError, match="no workflow waits on event"):  # a typo, or nothing registered yet
        signal(engine, "payment.confirmed", "A2", {"amount": 7})
    operations.register(engine, build_plan(payment().build(), check_tasks=False))
    done = signal(engine, "payment.confirmed", "A2", {"amount": 7})
    assert done.kept and done.delivered == []

    run_id = start(engine, payment(), {"order": "A2"})

    assert state(engine, run_id)[0] == "succeeded"
    assert output(engine, run_id, "pay") == {"amount": 7}
    # taken: a second run waiting on the same key waits
    again = start(engine, payment(), {"order": "A2"})
    assert state(engine, again)[1]["pay"] == "waiting"


def test_the_same_signal_twice_completes_the_step_once(engine: Engine) -> None:
    run_id = start(engine, payment(), {"order": "A3"})
    first = signal(engine, "payment.confirmed", "A3", 1)
    second = signal(engine, "payment.confirmed", "A3", 2)
    drive(engine)
    assert first.delivered == [(run_id, "pay")]
    assert second.delivered == [] and second.kept
    assert output(engine, run_id, "pay") == 1


def test_a_wait_that_times_out_fails_the_run_with_wait_timeout_and_a_dead_letter(engine: Engine) -> None:
    run_id = start(engine, payment(timeout="1s"), {"order": "A4"})
    with engine.repo.transaction() as tx:
        row = tx.steps(run_id, ["pay"])["pay"]
        tx.update_step(row.id, not_before=now() - timedelta(seconds=1))  # its deadline has passed
    reconcile(engine)
    drive(engine)
    status, steps = state(engine, run_id)
    assert (status, steps) == ("failed", {"pay": "failed", "ship": "cancelled"})
    with engine.repo.transaction() as tx:
        run = tx.run(run_id)
        entries = tx.dead_letters(run_id=run_id)
    assert run is not None and run.error is not None and "WaitTimeout" in run.error
    assert [(e.step, e.error_type, e.task) for e in entries] == [("pay", "WaitTimeout", "wait:payment.confirmed")]


def test_a_timer_fires_once_however_many_wake_it(engine: Engine) -> None:
    wf = WorkflowBuilder("cool")
    cool = wf.wait("cool", for_="2h")
    wf.step("after", "m:after", needs=[cool])
    run_id = start(engine, wf)
    with engine.repo.transaction() as tx:
        row = tx.steps(run_id, ["cool"])["cool"]
    assert wake_step(engine, row.id) == []  # not due: nothing happens
    assert state(engine, run_id)[1]["cool"] == "waiting"
    with engine.repo.transaction() as tx:
        tx.update_step(row.id, not_before=now() - timedelta(seconds=1))
    first = wake_step(engine, row.id)
    second = wake_step(engine, row.id)
    assert len(first) == 1 and second == []
    engine.send(first)
    drive(engine)
    assert state(engine, run_id) == ("succeeded", {"cool": "succeeded", "after": "succeeded"})


def sign_off(**spec: Any) -> WorkflowBuilder:
    wf = WorkflowBuilder("ship")
    ok = wf.approval("sign", **spec)
    wf.step("ship", "m:ship", needs=[ok], with_={"decision": ok.output})
    return wf


def test_approvals_refuse_wrong_approvers_keywords_data_and_repeats(engine: Engine) -> None:
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "additionalProperties": False}
    run_id = start(engine, sign_off(approvers=["alice", "bob"], required=2, keyword="SHIP IT", inputs=schema))
    with pytest.raises(Refused, match="eve may not decide"):
        approval.decide(engine, run_id, "sign", EVE, "approved", keyword="SHIP IT")
    with pytest.raises(Refused, match="keyword"):
        approval.decide(engine, run_id, "sign", ALICE, "approved", keyword="ship it")
    with pytest.raises(Refused, match="data"):
        approval.decide(engine, run_id, "sign", ALICE, "approved", keyword="SHIP IT", data={"other": 1})
    with pytest.raises(NotFound):
        approval.decide(engine, run_id, "nope", ALICE, "approved")
    with pytest.raises(Refused, match="not an approval"):
        approval.decide(engine, run_id, "ship", ALICE, "approved")
    first = approval.decide(engine, run_id, "sign", ALICE, "approved", keyword="SHIP IT", data={"note": "ok"})
    assert (first.approvals, first.ended) == (1, False)
    with pytest.raises(Refused, match="counts once"):
        approval.decide(engine, run_id, "sign", ALICE, "approved", keyword="SHIP IT")
    assert state(engine, run_id)[1]["sign"] == "waiting"
    second = approval.decide(engine, run_id, "sign", BOB, "approved", keyword="SHIP IT", comment="go")
    drive(engine)
    assert second.ended
    assert state(engine, run_id)[0] == "succeeded"
    out = output(engine, run_id, "sign")
    assert (out["decision"], out["by"], out["comment"], out["data"]) == (
        "approved",
        ["alice", "bob"],
        "go",
        {"note": "ok"},
    )
    with pytest.raises(Refused, match="not waiting"):
        approval.decide(engine, run_id, "sign", BOB, "rejected", comment="late")


def test_a_rejection_fails_the_step_and_is_never_retried(engine: Engine) -> None:
    run_id = start(engine, sign_off(options={"retry": {"max_attempts": 3, "delay": "1s"}}))
    approval.decide(engine, run_id, "sign", EVE, "rejected", comment="not today")
    drive(engine)
    assert state(engine, run_id)[1]["sign"] == "failed"
    with engine.repo.transaction() as tx:
        run = tx.run(run_id)
    assert run is not None and run.status == "failed"
    assert run.error == "sign: ApprovalRejected: rejected by eve: not today"


def test_pause_holds_back_a_sent_message_and_resume_runs_it(engine: Engine, ledger: Ledger) -> None:
    wf = WorkflowBuilder("two")
    first = wf.step("first", "m:first")
    wf.step("second", "m:second", needs=[first])
    run_id = operations.submit(engine, build_plan(wf.build(), check_tasks=False), {}).run_id
    repair.pause(engine, run_id, ALICE)  # the message for "first" is already in the broker
    drive(engine)
    assert ledger.calls == []
    assert state(engine, run_id) == ("paused", {"first": "queued", "second": "pending"})
    repair.resume(engine, run_id, ALICE)
    drive(engine)
    assert ledger.calls == ["m:first", "m:second"]
    assert state(engine, run_id)[0] == "succeeded"


def test_retry_runs_only_the_failed_steps_again(engine: Engine, ledger: Ledger) -> None:
    wf = WorkflowBuilder("fix")
    a = wf.step("a", "m:a")
    b = wf.step("b", "m:boom", needs=[a])
    wf.step("c", "m:c", needs=[b])
    run_id = start(engine, wf)
    assert state(engine, run_id) == ("failed", {"a": "succeeded", "b": "failed", "c": "cancelled"})
    with pytest.raises(UsageError):
        repair.retry(engine, run_id, ALICE, step="a", from_step="b")
    done = repair.retry(engine, run_id, ALICE)
    drive(engine)
    assert done.steps == ["b", "c"]
    assert ledger.calls == ["m:a", "m:boom", "m:boom"]
    with engine.repo.transaction() as tx:
        entries = tx.dead_letters(run_id=run_id)
    # the first failure's entry was resolved by the retry; the second failure has its own
    assert sorted(e.status for e in entries) == ["open", "resolved"]


def test_accept_a_failed_step_revives_the_run(engine: Engine, ledger: Ledger) -> None:
    wf = WorkflowBuilder("fix")
    b = wf.step("b", "m:boom")
    wf.step("c", "m:c", needs=[b], with_={"got": b.output})
    run_id = start(engine, wf)
    repair.accept(engine, run_id, "b", {"fixed": True}, ALICE)
    drive(engine)
    assert state(engine, run_id) == ("succeeded", {"b": "succeeded", "c": "succeeded"})
    assert output(engine, run_id, "c") == {"task": "m:c", "got": {"fixed": True}}
    with engine.repo.transaction() as tx:
        assert [e.status for e in tx.dead_letters(run_id=run_id)] == ["resolved"]


def test_skip_a_waiting_step_and_bad_input(engine: Engine) -> None:
    run_id = start(engine, payment(), {"order": "A5"})
    with pytest.raises(Refused):
        repair.skip(engine, run_id, "ship", ALICE)  # pending: neither failed nor waiting
    repair.skip(engine, run_id, "pay", ALICE)
    drive(engine)
    assert state(engine, run_id) == ("succeeded", {"pay": "skipped", "ship": "skipped"})
    with pytest.raises(NotFound):
        repair.pause(engine, "no-such-run", ALICE)
    with pytest.raises(PayloadTooLarge):
        signal(engine, "payment.confirmed", "k", "x" * (2 * 1024 * 1024))
    with engine.repo.transaction() as tx:
        assert tx.kept_signals() == []
    with pytest.raises(UsageError):
        signal(engine, "bad event name!", "k")


def test_replaying_a_timed_out_wait_waits_again(engine: Engine) -> None:
    from orchestrator.dlq import replay

    run_id = start(engine, payment(timeout="1s"), {"order": "R1"})
    with engine.repo.transaction() as tx:
        row = tx.steps(run_id, ["pay"])["pay"]
        tx.update_step(row.id, not_before=now() - timedelta(seconds=1))
    reconcile(engine)
    drive(engine)
    with engine.repo.transaction() as tx:
        (entry,) = tx.dead_letters(run_id=run_id)
    replay(engine, [entry.id])
    drive(engine)
    assert state(engine, run_id) == ("running", {"pay": "waiting", "ship": "pending"})
    signal(engine, "payment.confirmed", "R1", "late but fine")
    drive(engine)
    assert state(engine, run_id)[0] == "succeeded"
    assert output(engine, run_id, "ship") == {"task": "m:ship", "paid": "late but fine"}


def test_a_retried_approval_starts_from_no_decision(engine: Engine) -> None:
    # Given a quorum of 2 of 3, approved by alice and rejected by bob
    run_id = start(engine, sign_off(approvers=["alice", "bob", "carol"], required=2))
    approval.decide(engine, run_id, "sign", ALICE, "approved")
    approval.decide(engine, run_id, "sign", BOB, "rejected", comment="no")
    drive(engine)
    assert state(engine, run_id)[0] == "failed"
    # When the run is retried, the old decisions decide nothing: carol alone is not a quorum
    repair.retry(engine, run_id, ALICE)
    drive(engine)
    done = approval.decide(engine, run_id, "sign", Who("carol"), "approved")
    assert (done.approvals, done.ended) == (1, False)
    approval.decide(engine, run_id, "sign", BOB, "approved")  # bob may decide again
    drive(engine)
    assert state(engine, run_id)[0] == "succeeded"
    assert output(engine, run_id, "sign")["by"] == ["carol", "bob"]


def test_the_same_signal_id_twice_does_nothing_the_second_time(engine: Engine) -> None:
    run_id = start(engine, payment(), {"order": "S1"})
    first = signal(engine, "payment.confirmed", "S1", 1, signal_id="msg-1")
    again = signal(engine, "payment.confirmed", "S1", 1, signal_id="msg-1")
    drive(engine)
    assert first.delivered == [(run_id, "pay")]
    assert again.duplicate and not again.kept and again.delivered == []
    with engine.repo.transaction() as tx:
        assert tx.kept_signals() == []  # nothing left over to complete a later wait


def test_careless_input_is_refused_before_anything_changes(engine: Engine) -> None:
    run_id = start(engine, sign_off())
    with pytest.raises(UsageError, match="comment"):
        approval.decide(engine, run_id, "sign", ALICE, "approved", comment="ok\x00")
    with pytest.raises(UsageError, match="--by"):
        Who("x" * 201)
    assert state(engine, run_id)[1]["sign"] == "waiting"
    wf = WorkflowBuilder("far")
    wf.wait("far", until="${{ inputs.when }}")
    far = start(engine, wf, {"when": "9999-12-31T23:59:59-05:00"})
    with engine.repo.transaction() as tx:
        run = tx.run(far)
        entries = tx.dead_letters(run_id=far)
    assert run is not None and run.status == "failed" and "more than ten years away" in (run.error or "")
    assert [e.error_type for e in entries] == ["EvaluationError"]


def test_repairing_a_paused_run_keeps_it_paused(repo: Repository) -> None:
    # Given a step that fails while its run is being paused (an all_done cleanup after it)
    runs: list[str] = []
    ran: list[str] = []

    def resolve(task: str) -> Any:
        def run(**inputs: Any) -> Any:
            ran.append(task)
            if task == "m:a":
                repair.pause(engine, runs[0], ALICE)
                raise RuntimeError("boom")
            return task

        return run

    engine = Engine.create(repo, Recorder(), resolve, timing=Timing(countdown_limit=60), renew_leases=False)
    wf = WorkflowBuilder("paused")
    a = wf.step("a", "m:a")
    wf.step("cleanup", "m:cleanup", needs=[a], trigger="all_done")
    runs.append(operations.submit(engine, build_plan(wf.build(), check_tasks=False), {}).run_id)
    drive(engine)
    assert state(engine, runs[0]) == ("paused", {"a": "failed", "cleanup": "pending"})
    # When a person accepts the failed step, the run stays paused: nothing runs until resume
    repair.accept(engine, runs[0], "a", "by hand", ALICE)
    drive(engine)
    assert state(engine, runs[0]) == ("paused", {"a": "succeeded", "cleanup": "pending"})
    assert ran == ["m:a"]
    repair.resume(engine, runs[0], ALICE)
    drive(engine)
    assert state(engine, runs[0]) == ("succeeded", {"a": "succeeded", "cleanup": "succeeded"})


def test_cancelling_a_paused_run_with_a_waiting_step(engine: Engine) -> None:
    run_id = start(engine, payment(), {"order": "C1"})
    repair.pause(engine, run_id, ALICE)
    assert "already" in (repair.pause(engine, run_id, ALICE).note or "")
    operations.cancel(engine, run_id, ALICE)
    assert state(engine, run_id) == ("cancelled", {"pay": "cancelled", "ship": "cancelled"})
    # the signal finds nothing waiting any more: kept, and the cancelled run stays cancelled
    assert signal(engine, "payment.confirmed", "C1", 1).kept
    drive(engine)
    assert state(engine, run_id)[0] == "cancelled"
    with pytest.raises(UsageError):
        repair.resume(engine, run_id, ALICE)


def test_a_signal_whose_sender_dies_after_delivering_is_completed_by_the_reconciler(engine: Engine) -> None:
    from orchestrator.runtime.signal import _deliver

    run_id = start(engine, payment(), {"order": "D1"})
    # The step began waiting while the signal waited for its lock (so its run was not locked): the
    # signal hands it the data and commits; then the sender dies before completing it
    done = _deliver(engine, "payment.confirmed", "D1", {"n": 1}, None, ALICE, None, inline=False)
    assert done.delivered == [(run_id, "pay")]
    assert state(engine, run_id)[1]["pay"] == "waiting"
    reconcile(engine)
    drive(engine)
    assert state(engine, run_id) == ("succeeded", {"pay": "succeeded", "ship": "succeeded"})
    assert output(engine, run_id, "ship") == {"task": "m:ship", "paid": {"n": 1}}


def test_a_skipped_foreach_keeps_its_items_ended_when_the_run_revives(engine: Engine) -> None:
    # Given a foreach whose first item failed (the second was cancelled by fail-fast) and another failed step
    wf = WorkflowBuilder("fan")
    fan = wf.step("fan", "m:boom", foreach=[False, True], with_={"ok": "${{ item }}"}, concurrency=1)
    wf.step("other", "m:boom", needs=[fan], trigger="all_done")
    run_id = start(engine, wf)
    assert state(engine, run_id)[0] == "failed"
    # When a person skips the foreach (the run stays failed: other failed too), then accepts the other
    assert "other" in (repair.skip(engine, run_id, "fan", ALICE).note or "")
    repair.accept(engine, run_id, "other", "fixed", ALICE)
    drive(engine)
    # Then the run ends, and none of the skipped foreach's items was reopened
    assert state(engine, run_id) == ("succeeded", {"fan": "skipped", "other": "succeeded"})
    with engine.repo.transaction() as tx:
        assert [str(i.status) for i in tx.items(run_id, "fan")] == ["failed", "cancelled"]


def test_a_need_put_back_by_a_repair_ends_the_run_though_its_all_done_dependent_already_ran(engine: Engine) -> None:
    # Given s1 fails before it runs, so fail-fast cancels s0, and s2 (all_done after s0) runs anyway
    wf = WorkflowBuilder("fix")
    s0 = wf.step("s0", "m:s0")
    wf.step("s1", "m:s1", with_={"value": "${{ inputs.missing.key }}"})
    wf.step("s2", "m:s2", needs=[s0], trigger="all_done")
    run_id = start(engine, wf)
    assert state(engine, run_id) == ("failed", {"s0": "cancelled", "s1": "failed", "s2": "succeeded"})
    # When a person skips s1, s0 is put back and runs; s2 has run already
    repair.skip(engine, run_id, "s1", ALICE)
    drive(engine)
    # Then the run ends when s0 does, with nothing left for the reconciler to find
    assert state(engine, run_id) == ("succeeded", {"s0": "succeeded", "s1": "skipped", "s2": "succeeded"})


def test_one_signal_for_two_steps_of_a_run_whose_first_completion_fails_the_run(engine: Engine) -> None:
    # Given two steps of one run waiting on the same signal, and the first one's dependent fails to start
    wf = WorkflowBuilder("two")
    first = wf.wait("first", event="payment.confirmed", key="k")
    second = wf.wait("second", event="payment.confirmed", key="k")
    wf.step("after", "m:after", needs=[first], with_={"value": "${{ inputs.missing.key }}"})
    wf.step("cleanup", "m:cleanup", needs=[second], trigger="all_done")  # keeps the failing run open
    run_id = start(engine, wf)
    # When the signal completes the first: the run fails fast and cancels the second
    signal(engine, "payment.confirmed", "k", 1)
    drive(engine)
    # Then the second stays cancelled (it is not completed on stale data) and the run ends failed
    expected = {"first": "succeeded", "second": "cancelled", "after": "failed", "cleanup": "succeeded"}
    assert state(engine, run_id) == ("failed", expected)


def test_inputs_over_the_payload_limit_start_no_run(engine: Engine) -> None:
    wf = WorkflowBuilder("big")
    wf.step("a", "m:a")
    with pytest.raises(PayloadTooLarge, match="ORCHESTRATOR_MAX_PAYLOAD"):
        operations.submit(engine, build_plan(wf.build(), check_tasks=False), {"blob": "x" * (2 * 1024 * 1024)})
    with engine.repo.transaction() as tx:
        assert tx.runs(None, None, 10) == []
