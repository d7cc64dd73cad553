"""Errors that are not the step's own, after a claim: the claim is never left held by a live worker
that stopped working on it, and a step whose function returned is never run twice for our errors."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from orchestrator.definition import BreakerConfig, WorkflowBuilder, build_plan
from orchestrator.errors import StateStoreError
from orchestrator.runtime import operations
from orchestrator.runtime.breaker import Breakers
from orchestrator.runtime.engine import Engine, Recorder, Timing
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.reconciler import reconcile
from orchestrator.store import Repository


def one_step(name: str = "once") -> Any:
    wf = WorkflowBuilder(name)
    wf.step("only", "model:work", with_={"name": "a step argument called name", "func": 1})
    return build_plan(wf.build(), check_tasks=False)


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **inputs: Any) -> Any:
        self.count += 1
        return inputs


def engine_for(repo: Repository, calls: Calls, **timing: Any) -> Engine:
    return Engine.create(repo, Recorder(), lambda task: calls, timing=Timing(**timing), renew_leases=False)


def status_of(repo: Repository, run_id: str) -> tuple[str, str]:
    with repo.transaction() as tx:
        run = tx.run(run_id)
        row = tx.steps(run_id)["only"]
    assert run is not None
    return str(run.status), str(row.status)


def test_the_store_failing_while_recording_is_written_again_not_run_again(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a step whose result cannot be written the first two times (the store is down)
    calls = Calls()
    engine = engine_for(repo, calls, record_patience_s=10)
    submitted = operations.submit(engine, one_step(), {})
    executor = Executor(engine)
    real = executor._succeeded
    failures = iter([True, True])

    def flaky(*args: Any) -> Any:
        if next(failures, False):
            raise StateStoreError("state store error: the server closed the connection")
        return real(*args)

    monkeypatch.setattr(executor, "_succeeded", flaky)
    # When the step runs
    [message] = submitted.dispatches
    executor.execute(message.step_run_id, message.dispatch_id)
    # Then its result was written once the store came back, and the function ran once
    assert status_of(repo, submitted.run_id) == ("succeeded", "succeeded")
    assert calls.count == 1


def test_an_error_of_ours_after_the_claim_releases_it_for_a_redelivery(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a step whose recording keeps failing with an error that is not the step's
    calls = Calls()
    engine = engine_for(repo, calls, record_patience_s=0)
    submitted = operations.submit(engine, one_step(), {})
    executor = Executor(engine)
    monkeypatch.setattr(executor, "_succeeded", lambda *a: (_ for _ in ()).throw(OverflowError("a bug of ours")))
    [message] = submitted.dispatches
    with pytest.raises(OverflowError):
        executor.execute(message.step_run_id, message.dispatch_id)
    # Then the claim was given back at once: the same message, delivered again to this very live
    # process, takes the step over and runs it to the end
    monkeypatch.undo()
    Executor(engine).execute(message.step_run_id, message.dispatch_id)
    assert status_of(repo, submitted.run_id) == ("succeeded", "succeeded")
    assert calls.count == 2
    with repo.transaction() as tx:
        attempts = tx.attempts([message.step_run_id])
    assert [a["status"] for a in attempts] == ["failed", "succeeded"]
    assert "OverflowError: a bug of ours" in attempts[0]["error"]


def test_a_soft_time_limit_while_recording_does_not_lose_the_result(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    class SoftTimeLimitExceeded(Exception):  # noqa: N818 (Celery's name)
        pass

    calls = Calls()
    engine = engine_for(repo, calls, record_patience_s=5)
    submitted = operations.submit(engine, one_step(), {})
    executor = Executor(engine)
    real = executor._succeeded
    fired = iter([True])

    def interrupted(*args: Any) -> Any:
        if next(fired, False):
            raise SoftTimeLimitExceeded()
        return real(*args)

    monkeypatch.setattr(executor, "_succeeded", interrupted)
    [message] = submitted.dispatches
    executor.execute(message.step_run_id, message.dispatch_id)
    assert status_of(repo, submitted.run_id) == ("succeeded", "succeeded")
    assert calls.count == 1


def test_a_claim_held_by_a_live_process_is_retaken_once_its_lease_lapses(repo: Repository) -> None:
    # Given a step claimed by this very process (its host and pid are alive), whose execution
    # stopped without a word (a thread wedged, the process paused): nothing renews its lease
    calls = Calls()
    engine = engine_for(repo, calls, lease_s=0.2, stale_s=60)
    submitted = operations.submit(engine, one_step(), {})
    [message] = submitted.dispatches
    assert engine.lease is not None
    holder = engine.lease.holder()
    with repo.statements() as tx:
        assert tx.claim(message.step_run_id, message.dispatch_id, holder.id, holder.name, 0.2, _now()) is not None
    # When the lease lapses and the reconciler runs
    time.sleep(0.4)
    done = reconcile(engine)
    # Then the step is sent again, to run elsewhere
    assert done.lapsed == 1
    assert isinstance(engine.transport, Recorder)
    [again] = engine.transport.sent[-1:]
    Executor(engine).execute(again.step_run_id, again.dispatch_id)
    assert status_of(repo, submitted.run_id) == ("succeeded", "succeeded")


def test_a_live_holder_renewing_its_lease_keeps_the_step(repo: Repository) -> None:
    calls = Calls()
    engine = engine_for(repo, calls, lease_s=0.3, stale_s=60)
    submitted = operations.submit(engine, one_step(), {})
    [message] = submitted.dispatches
    assert engine.lease is not None
    holder = engine.lease.holder()
    with repo.statements() as tx:
        tx.claim(message.step_run_id, message.dispatch_id, holder.id, holder.name, 0.3, _now())
    engine.lease.hold(message.step_run_id)
    for _ in range(4):
        time.sleep(0.15)
        engine.lease.renew()
    assert reconcile(engine).lapsed == 0
    assert status_of(repo, submitted.run_id) == ("running", "running")


def test_breaker_bookkeeping_failing_after_the_call_keeps_the_result(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a breaker whose storage fails when it records the outcome of a call
    breakers = Breakers(repo, None)
    config = BreakerConfig(fail_max=3, reset_timeout=30)
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "charged"

    from orchestrator.runtime.breaker import DatabaseStorage

    def broken(self: DatabaseStorage) -> None:
        raise StateStoreError("the breaker's storage is down")

    monkeypatch.setattr(DatabaseStorage, "reset_counter", broken)
    # Then the call's result stands, and the call was made once
    assert breakers.call("payments", config, charge, 5) == "charged"
    assert calls == [1]


def test_a_step_argument_named_name_or_func_reaches_a_step_behind_a_breaker(repo: Repository) -> None:
    calls = Calls()
    engine = engine_for(repo, calls)
    wf = WorkflowBuilder("guarded")
    wf.breaker("api", fail_max=2)
    wf.step("only", "model:work", with_={"name": "Ada", "func": "f"}, breaker="api")
    submitted = operations.submit(engine, build_plan(wf.build(), check_tasks=False), {})
    [message] = submitted.dispatches
    Executor(engine).execute(message.step_run_id, message.dispatch_id)
    with repo.transaction() as tx:
        row = tx.steps(submitted.run_id)["only"]
    assert (str(row.status), row.output) == ("succeeded", {"name": "Ada", "func": "f"})


def test_the_maintenance_thread_survives_errors_that_are_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.worker import maintenance

    passes: list[int] = []

    def failing_reconcile(engine: Any) -> None:
        passes.append(1)
        raise TimeoutError("QueuePool limit of size 5 overflow 10 reached")

    import orchestrator.runtime.reconciler as reconciler
    import orchestrator.worker.tasks as tasks

    monkeypatch.setattr(reconciler, "reconcile", failing_reconcile)
    monkeypatch.setattr(tasks, "engine", lambda: None)
    monkeypatch.setattr(maintenance, "_stop", threading.Event())
    thread = threading.Thread(target=maintenance._loop, args=(0.05,), daemon=True)
    thread.start()
    time.sleep(0.5)
    alive = thread.is_alive()
    maintenance._stop.set()
    thread.join(2)
    assert alive and len(passes) >= 3


def _now() -> Any:
    from orchestrator.store import now

    return now()
