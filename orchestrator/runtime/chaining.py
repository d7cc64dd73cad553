"""Chaining: runs that start by themselves when a run of another workflow ends (``on: after``)
or when an event is emitted (``on: event``).

They start in the same transaction as what caused them (the upstream run's end, the emission),
each with an idempotency key made of the subscribing entry and the upstream run or emission, so
each starts exactly one run per entry whatever the number of workers and redeliveries. The
chain's length travels with it and is capped by ``ORCHESTRATOR_MAX_CHAIN_DEPTH``, so a chain that
loops back on itself stops.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from orchestrator.definition.plan import Plan, TriggerPlan
from orchestrator.errors import EvaluationError, InputsError, NotFound
from orchestrator.runtime.checks import check_inputs
from orchestrator.runtime.scheduler import Dispatch, Runtime
from orchestrator.settings import get_settings
from orchestrator.store import RunRow, Tx, now


@dataclass
class Chained:
    """What an upstream run's end or an emission started: runs (workflow, run id), and the entries
    that started nothing, with why."""

    started: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    already: int = 0  # entries this upstream had started a run of before

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The upstream run's record of what its end started."""
        at = now()
        found = [_event(run_id, "run.chained", {"workflow": w, "run_id": r}, at) for w, r in self.started]
        return found + [_event(run_id, "run.chain_skipped", {"workflow": w, "reason": y}, at) for w, y in self.skipped]


def after_run(runtime: Runtime, tx: Tx, run: RunRow) -> Chained:
    """``run`` just ended (its lock held): start the runs whose ``on: after`` names its workflow."""
    subscribers = tx.subscribers("after", run.workflow)
    if not subscribers:
        return Chained()
    upstream = {
        "id": run.id,
        "workflow": run.workflow,
        "status": str(run.status),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
    }
    origin = {"after": {"run_id": run.id, "workflow": run.workflow, "status": str(run.status)}}
    return start_subscribers(runtime, tx, subscribers, {"run": upstream}, origin, f"after:{run.id}", run.chain_depth)


def start_subscribers(
    runtime: Runtime,
    tx: Tx,
    subscribers: list[tuple[str, str, int]],
    context: dict[str, Any],
    origin: dict[str, Any],
    upstream_key: str,
    chain_depth: int,
) -> Chained:
    """Start one run per subscribing entry whose ``if`` holds, unless it already started one."""
    done = Chained()
    limit = get_settings().max_chain_depth
    for workflow, version, entry in subscribers:
        try:
            plan = runtime.plans.get(tx, version)
            trigger = next(t for t in plan.triggers if t.index == entry)
        except (NotFound, StopIteration):
            done.skipped.append((workflow, f"its version {version} has no on entry {entry}"))
            continue
        status = origin.get("after", {}).get("status")
        if status is not None and status not in trigger.on.status:
            continue
        if chain_depth + 1 > limit:
            done.skipped.append(
                (workflow, f"the chain is {chain_depth + 1} runs long; ORCHESTRATOR_MAX_CHAIN_DEPTH allows {limit}")
            )
            continue
        key = bounded_key(f"on:{workflow}:{entry}:{upstream_key}", "on")
        if tx.run_for_key(key) is not None:
            done.already += 1  # this upstream already started it
            continue
        try:
            inputs = _inputs(trigger, context, plan)
        except (EvaluationError, InputsError) as exc:
            done.skipped.append((workflow, exc.message))
            continue
        if inputs is None:
            done.skipped.append((workflow, "its if was false"))
            continue
        run_id = str(uuid.uuid4())
        started_by = {**origin, "entry": entry}
        done.dispatches += start_run(runtime, tx, plan, run_id, inputs, key, started_by, chain_depth + 1)
        done.started.append((workflow, run_id))
    return done


def bounded_key(key: str, prefix: str) -> str:
    """An idempotency key that fits its column: a long name or id is hashed, still one key each."""
    return key if len(key) <= 200 else f"{prefix}#" + hashlib.sha256(key.encode()).hexdigest()


def start_run(
    runtime: Runtime,
    tx: Tx,
    plan: Plan,
    run_id: str,
    inputs: dict[str, Any],
    key: str | None,
    started_by: dict[str, Any],
    chain_depth: int,
) -> list[Dispatch]:
    """Create run ``run_id`` of ``plan`` in ``tx``, recording what started it, and start it: the
    messages to send once ``tx`` commits."""
    tx.insert_run(
        run_id,
        plan.workflow.name,
        plan.version,
        inputs,
        key,
        plan.first_rows(),
        started_by=started_by,
        chain_depth=chain_depth,
    )
    run = tx.lock_run(run_id)
    assert run is not None
    return runtime.advancer(tx, plan, run).start()


def _inputs(trigger: TriggerPlan, context: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """The started run's inputs, or None when the entry's ``if`` is false."""
    if trigger.condition is not None and not trigger.condition.render(context):
        return None
    inputs = trigger.inputs.render(context)
    check_inputs(plan.workflow, inputs)
    return inputs


def _event(run_id: str, kind: str, detail: dict[str, Any], at: Any) -> dict[str, Any]:
    return {"run_id": run_id, "step": None, "item_index": None, "kind": kind, "detail": detail, "at": at}
