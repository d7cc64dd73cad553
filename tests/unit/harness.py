"""The in-process harness of the unit tier: a ledger of step calls standing in for step functions,
and a loop that delivers what the recording transport holds, as workers would."""

from __future__ import annotations

from typing import Any

from orchestrator.runtime.engine import Engine, Recorder
from orchestrator.runtime.executor import Executor
from orchestrator.runtime.waking import wake_step


class Ledger:
    """Every step function call, in order: what ran, and how often."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def resolve(self, task: str) -> Any:
        def run(**inputs: Any) -> Any:
            self.calls.append(task)
            if task.endswith(":boom") and not inputs.get("ok"):
                raise RuntimeError("boom")
            return {"task": task, **inputs}

        return run


def drive(engine: Engine) -> None:
    """Deliver every step message the transport holds, as workers would, until none is left."""
    recorder = engine.transport
    assert isinstance(recorder, Recorder)
    while recorder.sent:
        batch, recorder.sent = recorder.sent, []
        for d in batch:
            if d.wake:
                engine.send(wake_step(engine, d.step_run_id))
            else:
                engine.send(Executor(engine).execute(d.step_run_id, d.dispatch_id))


def state(engine: Engine, run_id: str) -> tuple[str, dict[str, str]]:
    with engine.repo.transaction() as tx:
        run = tx.run(run_id)
        steps = {s: str(r.status) for s, r in tx.steps(run_id).items()}
    assert run is not None
    return str(run.status), steps
