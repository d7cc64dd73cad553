"""A model-based test of the core: random workflows driven through the real scheduler, executor,
reconciler, cancel, dead-letter replay, signals, approvals, pause/resume and repairs, under random
interleavings of what workers, brokers and people do.

Nothing is mocked below the transport: the store is real (SQLite or PostgreSQL), every step goes
through ``Executor.execute`` and every decision through the scheduler. The broker is a list of
messages the machine delivers, duplicates, redelivers or loses; a worker that dies leaves its claim
behind until its lease lapses. After every rule the invariants of the issue are checked against
the store; at the end the world turns healthy and every run must end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.definition import Trigger, Workflow, build_plan
from orchestrator.dlq import replay
from orchestrator.errors import OrchestratorError
from orchestrator.runtime import approval, operations, repair
from orchestrator.runtime.engine import Engine, Timing
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.reconciler import reconcile
from orchestrator.runtime.scheduler import Dispatch, trigger_verdict
from orchestrator.runtime.signal import _deliver, signal
from orchestrator.runtime.waking import wake_step
from orchestrator.status import STEP_TERMINAL, RunStatus, StepStatus
from orchestrator.store import Repository, StepRow, now
from orchestrator.store import tables as t
from orchestrator.store.database import dispose_engines

OPEN = ("pending", "queued", "running", "waiting")
EVENT = "model.event"
PERSON = operations.Who("model", "a rule")


class SoftTimeLimitExceeded(Exception):  # noqa: N818 (Celery's name, which the timeout middleware recognises)
    """What Celery raises inside a step that runs past its soft time limit."""


class WorkerDied(BaseException):  # noqa: N818
    """The process running the step is gone (SIGKILL): nothing after this point happens."""


class Broker:
    """The transport as the machine sees it: messages in flight, in order."""

    def __init__(self) -> None:
        self.messages: list[Dispatch] = []
        self.delivered: list[Dispatch] = []
        self.revoked: list[str] = []

    def send(self, dispatches: Any) -> None:
        self.messages.extend(dispatches)

    def revoke(self, dispatch_ids: Any) -> None:
        self.revoked.extend(dispatch_ids)

    def lost(self, rows: Any) -> set[str]:
        present = {m.dispatch_id for m in self.messages}
        return {r.dispatch_id for r in rows if r.dispatch_id and r.dispatch_id not in present}


@dataclass
class Outcomes:
    """What the next executions of a step function do (then "ok")."""

    def __init__(self) -> None:
        self.queue: list[str] = []

    @property
    def next(self) -> str:
        return self.queue[0] if self.queue else "ok"

    @next.setter
    def next(self, outcome: str) -> None:
        self.queue = [outcome]

    def function(self, **inputs: Any) -> Any:
        outcome = self.queue.pop(0) if self.queue else "ok"
        if outcome == "fail":
            raise ConnectionError("the service is down")
        if outcome == "fatal":
            raise ValueError("bad request")
        if outcome == "timeout":
            raise SoftTimeLimitExceeded()
        if outcome == "die":
            raise WorkerDied()
        return inputs.get("value", 1)


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    """A random DAG: needs on earlier steps, the three triggers, if, foreach, retries, references."""
    count = draw(st.integers(1, 6))
    steps: dict[str, Any] = {}
    for i in range(count):
        name = f"s{i}"
        earlier = list(steps)
        needs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        step: dict[str, Any] = {"task": "model:work", "with": {"value": i}}
        kind = draw(st.sampled_from(["task"] * 6 + ["event", "timer", "approval"]))
        if kind != "task":
            step = {"wait": {"event": EVENT, "key": "k"}} if kind == "event" else {}
            if kind == "event" and draw(st.booleans()):
                step["wait"]["timeout"] = "1h"
            if kind == "timer":
                step["wait"] = {"for": "1h"}
            if kind == "approval":
                step["approval"] = {"timeout": "1h"} if draw(st.booleans()) else {}
        if needs:
            step["needs"] = needs
            trigger = draw(st.sampled_from(list(Trigger)))
            if trigger is not Trigger.ALL_SUCCEEDED:
                step["trigger"] = str(trigger)
            if draw(st.booleans()) and kind == "task":
                step["with"] = {"value": f"${{{{ steps.{needs[0]}.output }}}}"}
        condition = draw(st.sampled_from([None, None, None, True, False, "${{ inputs.flag }}"]))
        if condition is not None:
            step["if"] = condition
        if kind != "task":
            pass
        elif draw(st.integers(0, 3)) == 0:
            step["foreach"] = "${{ inputs.items }}"
            step["with"] = {"value": "${{ item }}"}
            concurrency = draw(st.sampled_from([None, 1, 2]))
            if concurrency is not None:
                step["concurrency"] = concurrency
        elif draw(st.integers(0, 9)) == 0:
            step["with"] = {"value": "${{ inputs.missing.key }}"}  # fails at run time: EvaluationError
        attempts = draw(st.integers(1, 3))
        if attempts > 1:
            step["retry"] = {
                "max_attempts": attempts,
                "delay": "1ms",
                "jitter": False,
                "retry_on": ["ConnectionError", "TimeoutError"],
            }
        steps[name] = step
    return {"name": "model", "steps": steps}


def state_machine(make_repo: Callable[[], Repository], countdown_limits: tuple[float, ...] = (0.0, 60.0)) -> type:
    """The machine, over a fresh store for each example (``make_repo``)."""

    class CoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.repo = make_repo()
            self.broker = Broker()
            self.outcomes = Outcomes()
            self.engine: Engine | None = None
            self.dead: list[Dispatch] = []
            self.runs: list[str] = []

        @initialize(
            definition=workflows(),
            countdown=st.sampled_from(countdown_limits),
            items=st.lists(st.integers(0, 9), max_size=4),
            flag=st.booleans(),
        )
        def submit_first(self, definition: dict[str, Any], countdown: float, items: list[int], flag: bool) -> None:
            timing = Timing(lease_s=30, countdown_limit=countdown, stale_s=0, poison_limit=2, record_patience_s=0)
            self.engine = Engine.create(
                self.repo, self.broker, lambda task: self.outcomes.function, timing=timing, renew_leases=False
            )
            self.plan = build_plan(Workflow.model_validate(definition), check_tasks=False)
            self.inputs = {"items": items, "flag": flag}
            self.submit()

        @precondition(lambda self: len(self.runs) < 3)
        @rule()
        def submit(self) -> None:
            assert self.engine is not None
            self.runs.append(operations.submit(self.engine, self.plan, self.inputs).run_id)

        # Workers

        @precondition(lambda self: self.broker.messages)
        @rule(pick=st.integers(0, 50), outcome=st.sampled_from(["ok", "ok", "ok", "fail", "fatal", "timeout", "die"]))
        def deliver(self, pick: int, outcome: str) -> None:
            message = self.broker.messages.pop(pick % len(self.broker.messages))
            self.execute(message, outcome)

        @precondition(lambda self: self.broker.messages)
        @rule(
            pick=st.integers(0, 50),
            outcomes=st.lists(st.sampled_from(["ok", "ok", "fail", "fatal", "timeout", "die"]), min_size=1, max_size=4),
        )
        def deliver_continuing(self, pick: int, outcomes: list[str]) -> None:
            """A worker runs the step, then the steps it makes ready, in-process (local continuation)."""
            message = self.broker.messages.pop(pick % len(self.broker.messages))
            self.execute(message, outcomes[0], may_continue=True, then=outcomes[1:])

        @precondition(lambda self: self.broker.messages)
        @rule(pick=st.integers(0, 50), outcome=st.sampled_from(["ok", "fail", "die"]))
        def deliver_twice(self, pick: int, outcome: str) -> None:
            """The broker hands the same message to two workers."""
            message = self.broker.messages[pick % len(self.broker.messages)]
            self.execute(message, outcome)

        @precondition(lambda self: self.broker.delivered)
        @rule(pick=st.integers(0, 50))
        def redeliver_old(self, pick: int) -> None:
            """A message delivered before arrives again (a late redelivery): it must change nothing."""
            self.execute(self.broker.delivered[pick % len(self.broker.delivered)], "ok")

        @precondition(lambda self: self.broker.messages)
        @rule(pick=st.integers(0, 50))
        def lose_message(self, pick: int) -> None:
            self.broker.messages.pop(pick % len(self.broker.messages))

        @precondition(lambda self: self.dead)
        @rule()
        def leases_lapse(self) -> None:
            """Time passes: the claims of dead workers are no longer renewed (between rules nothing
            executes, so every running step is a dead worker's: also one it had continued to)."""
            self.dead = []
            with self.repo.transaction() as tx:
                tx.c.execute(
                    t.step_runs.update()
                    .where(t.step_runs.c.status == "running", t.step_runs.c.lease_expires_at.is_not(None))
                    .values(lease_expires_at=now() - timedelta(hours=1))
                )

        @rule()
        def waits_end(self) -> None:
            """Time passes: waits held in the store (long retry delays) are due."""
            with self.repo.transaction() as tx:
                tx.c.execute(
                    t.step_runs.update()
                    .where(t.step_runs.c.status == "queued", t.step_runs.c.dispatch_id.is_(None))
                    .values(not_before=now() - timedelta(hours=1))
                )

        @precondition(lambda self: self.dead)
        @rule(pick=st.integers(0, 50))
        def redeliver_after_worker_loss(self, pick: int) -> None:
            """The broker gives a dead worker's message to another worker (reject_on_worker_lost)."""
            self.execute(self.dead[pick % len(self.dead)], "ok")

        @rule()
        def reconcile(self) -> None:
            assert self.engine is not None
            reconcile(self.engine)

        @rule()
        def waits_are_due(self) -> None:
            """Time passes: the timers and deadlines of waiting steps come."""
            with self.repo.transaction() as tx:
                tx.c.execute(
                    t.step_runs.update()
                    .where(t.step_runs.c.status == "waiting", t.step_runs.c.not_before.is_not(None))
                    .values(not_before=now() - timedelta(hours=1))
                )

        # People

        @precondition(lambda self: self.runs)
        @rule(pick=st.integers(0, 2))
        def cancel(self, pick: int) -> None:
            assert self.engine is not None
            try:
                operations.cancel(self.engine, self.runs[pick % len(self.runs)])
            except OrchestratorError:
                pass  # the run had ended: refused, as the CLI refuses it

        @rule(pick=st.integers(0, 50))
        def replay_dead_letter(self, pick: int) -> None:
            assert self.engine is not None
            with self.repo.transaction() as tx:
                entries = tx.dead_letters("open")
            if not entries:
                return
            try:
                replay(self.engine, [entries[pick % len(entries)].id])
            except OrchestratorError:
                pass  # the run was cancelled: refused

        @rule()
        def send_signal(self) -> None:
            assert self.engine is not None
            try:
                signal(self.engine, EVENT, "k", {"signalled": True}, who=PERSON)
            except OrchestratorError:
                pass  # no workflow of this example waits on it: refused

        @rule()
        def signal_sender_dies(self) -> None:
            """A signal hands its data over (to steps whose run it did not lock), then its sender dies."""
            assert self.engine is not None
            try:
                _deliver(self.engine, EVENT, "k", {"signalled": "late"}, None, PERSON, None, inline=False)
            except OrchestratorError:
                pass  # no workflow of this example waits on it: refused

        @precondition(lambda self: self.runs)
        @rule(pick=st.integers(0, 50), verdict=st.sampled_from(["approved", "approved", "rejected"]))
        def decide(self, pick: int, verdict: str) -> None:
            self.act(pick, lambda engine, run_id, step: approval.decide(engine, run_id, step, PERSON, verdict))

        @precondition(lambda self: self.runs)
        @rule(pick=st.integers(0, 50), action=st.sampled_from(["pause", "resume", "retry"]))
        def operate(self, pick: int, action: str) -> None:
            assert self.engine is not None
            run_id = self.runs[pick % len(self.runs)]
            try:
                getattr(repair, action)(self.engine, run_id, PERSON)
            except OrchestratorError:
                pass  # refused: the run was not in a state this applies to

        @precondition(lambda self: self.runs)
        @rule(pick=st.integers(0, 50), accept=st.booleans())
        def force(self, pick: int, accept: bool) -> None:
            def forced(engine: Engine, run_id: str, step: str) -> Any:
                if accept:
                    return repair.accept(engine, run_id, step, "accepted", PERSON)
                return repair.skip(engine, run_id, step, PERSON)

            self.act(pick, forced)

        # Helpers

        def act(self, pick: int, action: Callable[[Engine, str, str], Any]) -> None:
            """Apply ``action`` to some step of some run; a refusal changes nothing."""
            assert self.engine is not None
            run_id = self.runs[pick % len(self.runs)]
            step = list(self.plan.steps)[pick % len(self.plan.steps)]
            try:
                action(self.engine, run_id, step)
            except OrchestratorError:
                pass

        def execute(
            self, message: Dispatch, outcome: str, may_continue: bool = False, then: Sequence[str] = ()
        ) -> None:
            assert self.engine is not None
            self.outcomes.queue = [outcome, *then]
            self.broker.delivered.append(message)
            if message.wake:
                self.engine.send(wake_step(self.engine, message.step_run_id))
                self.outcomes.next = "ok"
                return
            try:
                executor = Executor(self.engine)
                self.engine.send(executor.execute(message.step_run_id, message.dispatch_id, may_continue=may_continue))
            except WorkerDied:
                self.dead.append(message)
            self.outcomes.next = "ok"

        def ended(self, run_id: str) -> bool:
            with self.repo.transaction() as tx:
                run = tx.run(run_id)
            return run is not None and run.status.terminal

        def people_finish(self) -> None:
            """Everything people would do for the runs to end: resume, signal, approve, time passes."""
            assert self.engine is not None
            for run_id in self.runs:
                try:
                    repair.resume(self.engine, run_id, PERSON)
                except OrchestratorError:
                    pass  # not paused
            self.send_signal()
            for run_id in self.runs:
                for step in self.plan.steps:
                    try:
                        approval.decide(self.engine, run_id, step, PERSON, "approved")
                    except OrchestratorError:
                        pass  # not an approval, or not waiting
            self.waits_are_due()

        def dump(self, run_id: str) -> str:
            steps, items = self.rows(run_id)
            rows = [
                (r.step, r.item_index, str(r.status), r.dispatch_id, r.lease_expires_at, r.not_before, r.needs_open)
                for r in [*steps.values(), *items]
                if not r.status.terminal
            ]
            with self.repo.transaction() as tx:
                run = tx.run(run_id)
            return f"{run}; open rows {rows}; messages {self.broker.messages}"

        def rows(self, run_id: str) -> tuple[dict[str, StepRow], list[StepRow]]:
            with self.repo.transaction() as tx:
                return tx.steps(run_id), tx.items(run_id)

        # Invariants

        @invariant()
        def runs_are_consistent(self) -> None:
            for run_id in self.runs:
                check_run(self.repo, self.plan, run_id)

        def teardown(self) -> None:
            """The world turns healthy: every message is delivered, dead workers' leases lapse, the
            reconciler runs. Every run must then end."""
            try:
                if self.engine is not None:
                    idle = 0
                    for _ in range(300):
                        self.waits_end()
                        self.people_finish()
                        if self.dead:
                            self.leases_lapse()
                        if self.broker.messages:
                            self.execute(self.broker.messages.pop(0), "ok")
                            idle = 0
                            continue
                        if reconcile(self.engine).dispatches or self.broker.messages:
                            idle = 0
                            continue
                        idle += 1  # a wait completed by people may start another: look a few times more
                        if idle >= 3 or all(self.ended(run_id) for run_id in self.runs):
                            break
                    for run_id in self.runs:
                        with self.repo.transaction() as tx:
                            run = tx.run(run_id)
                        assert run is not None and run.status.terminal, f"run {run_id} never ended: {self.dump(run_id)}"
                        check_run(self.repo, self.plan, run_id)
            finally:
                dispose_engines(self.repo.engine.url.render_as_string(hide_password=False))

    return CoreMachine


def check_run(repo: Repository, plan: Any, run_id: str) -> None:
    """The issue's invariants for one run, from the store alone."""
    with repo.transaction() as tx:
        run = tx.run(run_id)
        steps = tx.steps(run_id)
        items = tx.items(run_id)
        events = tx.history(run_id)
        attempts = tx.attempts(run_id=run_id)
    assert run is not None
    open_rows = [r for r in [*steps.values(), *items] if not r.status.terminal]
    where = f"run {run_id} ({run.status}, error {run.error!r}); steps {_statuses(steps)}"
    # An ended run has no open step.
    if run.status.terminal:
        assert not open_rows, f"{where}: ended with open rows {[(r.step, r.item_index, r.status) for r in open_rows]}"
    # A run with nothing in flight has ended.
    in_flight = [
        r for r in open_rows if r.status in (StepStatus.QUEUED, StepStatus.WAITING) or r.lease_expires_at is not None
    ]
    if run.status is RunStatus.RUNNING:
        assert in_flight, f"{where}: nothing in flight, yet the run is running"
    # No step starts after its run is cancelled.
    cancelled = False
    for e in events:  # (until a person retries the run)
        if e["kind"] in ("run.cancelled", "run.retried"):
            cancelled = e["kind"] == "run.cancelled"
        assert not (cancelled and e["kind"] == "step.running"), f"{where}: a step started after the cancel: {e}"
    # No step starts while its run is paused.
    paused = False
    for e in events:
        if e["kind"] == "run.paused":
            paused = True
        elif e["kind"] in ("run.cancelled", "run.failed", "run.succeeded") or (
            e["kind"] == "run.resumed" and "by" in (e["detail"] or {})
        ):
            paused = False  # resumed by a person, or ended (a repair of an ended run starts it again)
        elif paused and e["kind"] in ("step.running", "step.waiting", "step.queued"):
            raise AssertionError(f"{where}: {e['step']} started while the run was paused: {e}")
    # Each step's success is recorded once.
    successes: dict[tuple[str, Any], int] = {}
    for e in events:
        if e["kind"] == "step.succeeded":
            key = (e["step"], e["item_index"])
            successes[key] = successes.get(key, 0) + 1
    assert all(n == 1 for n in successes.values()), f"{where}: a success recorded twice: {successes}"
    won = [a for a in attempts if a["status"] == "succeeded"]
    assert len(won) == len({a["step_run_id"] for a in won}), f"{where}: two successful attempts of one step"
    # No step waits on a need that has ended without being considered; the join counters are exact.
    for name, row in steps.items():
        needs = plan.steps[name].needs
        if row.status is StepStatus.PENDING and run.status is RunStatus.RUNNING:
            open_needs = sum(1 for n in needs if not steps[n].status.terminal)
            assert open_needs > 0, f"{where}: {name} waits although every need of it ended"
            assert row.needs_open == open_needs, f"{where}: {name} counts {row.needs_open} open needs, not {open_needs}"
    # A foreach that is running has work left; a closed one has none.
    by_step: dict[str, list[StepRow]] = {}
    for item in items:
        by_step.setdefault(item.step, []).append(item)
    for name, its in by_step.items():
        parent = steps[name]
        open_items = [i for i in its if not i.status.terminal]
        if parent.status is StepStatus.RUNNING:
            assert open_items, f"{where}: foreach {name} runs with no item left"
        else:
            assert not open_items, f"{where}: foreach {name} ended {parent.status} with items open"
    # A run succeeded only if its steps' statuses say it should.
    if run.status is RunStatus.SUCCEEDED:
        check_success(plan, steps, by_step, where)
    if run.status is RunStatus.FAILED:
        failed = [r for r in [*steps.values(), *items] if r.status is StepStatus.FAILED]
        assert failed or (run.error or "").startswith("outputs:"), f"{where}: failed with no failed step"


def check_success(plan: Any, steps: dict[str, StepRow], by_step: dict[str, list[StepRow]], where: str) -> None:
    for name, row in steps.items():
        sp = plan.steps[name]
        assert row.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED), f"{where}: {name} is {row.status}"
        needs = {n: steps[n].status for n in sp.needs}
        assert all(s in STEP_TERMINAL for s in needs.values())
        verdict = trigger_verdict(sp.trigger, needs)
        if row.status is StepStatus.SKIPPED:
            assert verdict is not None or (row.reason or "").startswith(("if was false", "skipped by")), (
                f"{where}: {name} skipped ({row.reason}) though its trigger says run"
            )
        else:
            assert verdict is None, f"{where}: {name} ran though its trigger says skip ({verdict})"
            if sp.foreach is not None and not (row.reason or "").startswith("accepted by"):
                its = by_step.get(name, [])
                assert all(i.status is StepStatus.SUCCEEDED for i in its), f"{where}: {name} succeeded with items not"
                assert row.output == [i.output for i in its], f"{where}: {name}'s output is not its items' outputs"


def _statuses(steps: dict[str, StepRow]) -> str:
    return json.dumps({n: str(r.status) for n, r in steps.items()})
