"""Approvals: people decide a waiting approval step, one decision each.

Every check is made under the run's lock before anything is written, so a refused decision
changes nothing: someone not among the approvers, an approver deciding twice, a wrong keyword,
data the step's inputs schema refuses, a step that is not waiting for a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator import audit
from orchestrator.definition.model import Approval
from orchestrator.errors import NotFound, Refused, shown
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.operations import Who, check_payload, open_run, schema_problem
from orchestrator.runtime.scheduler import Dispatch
from orchestrator.status import StepStatus
from orchestrator.store import now
from orchestrator.store.rows import event_row

APPROVED = "approved"
REJECTED = "rejected"


@dataclass
class Decided:
    run_id: str
    step: str
    decision: str
    approvals: int
    required: int
    ended: bool
    dispatches: list[Dispatch] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step": self.step,
            "approvals": self.approvals,
            "required": self.required,
            "ended": self.ended,
        }


def decide(
    engine: Engine,
    run_id: str,
    step: str,
    who: Who,
    decision: str,
    *,
    comment: str | None = None,
    keyword: str | None = None,
    data: Any = None,
) -> Decided:
    """Record one decision; the quorum's last approval, or any rejection, ends the step."""
    if data is not None:
        check_payload(data, "the decision's data")
    if comment is not None:
        check_payload(comment, "the comment", limit=10_000)
    with engine.repo.transaction() as tx:
        run = open_run(tx, run_id)
        plan = engine.plans.get(tx, run.version)
        sp = plan.steps[step] if step in plan.steps else None
        if sp is None:
            raise NotFound(f"run {shown(run_id)} has no step '{shown(step)}'")
        spec = sp.step.approval
        if spec is None:
            raise Refused(f"step '{step}' is a {sp.kind} step, not an approval")
        row = tx.current_row(run_id, step)
        if row is None or row.status is not StepStatus.WAITING or row.wake is not None:
            raise Refused(f"step '{step}' is not waiting for a decision (it is {row.status if row else 'not started'})")
        prior = tx.decisions([row.id], row.dispatch_id)
        _check(spec, step, who.by, decision, keyword, data, prior)
        at = now()
        tx.add_decision(row, who.by, decision, comment, data, at)
        approvals = sum(1 for d in prior if d["decision"] == APPROVED) + (decision == APPROVED)
        detail = who.detail(decision=decision, comment=comment, approvals=approvals, required=spec.required)
        tx.add_events([event_row(row, "step.decided", detail, at)])
        done = Decided(run_id, step, decision, approvals, spec.required, False)
        if decision == REJECTED or approvals >= spec.required:  # decisive: the step ends now
            done.ended = True
            tx.update_step(row.id, wake=decision)
            row.wake = decision
            done.dispatches = engine.advancer(tx, plan, run).woken(row)
        action = "step.approve" if decision == APPROVED else "step.reject"
        decided = {"step": step, "comment": comment, "approvals": approvals, "required": spec.required}
        audit.record(tx, who, action, f"run:{run_id}", {**decided, **({"data": data} if data is not None else {})})
    engine.send(done.dispatches)
    return done


def _check(
    spec: Approval,
    step: str,
    actor: str,
    decision: str,
    keyword: str | None,
    data: Any,
    prior: list[dict[str, Any]],
) -> None:
    if spec.approvers and actor not in spec.approvers:
        raise Refused(f"{actor} may not decide '{step}': its approvers are {', '.join(spec.approvers)}")
    earlier = next((d for d in prior if d["actor"] == actor), None)
    if earlier is not None:
        raise Refused(f"{actor} already {earlier['decision']} '{step}'; an approver counts once")
    if decision != APPROVED:
        return
    if spec.keyword is not None and keyword != spec.keyword:
        raise Refused(f"approving '{step}' needs its keyword, quoted exactly (--keyword)", {"(--keyword)": "(keyword)"})
    problem = None if spec.inputs is None else schema_problem(spec.inputs, {} if data is None else data, "data")
    if problem is not None:
        raise Refused(f"{problem} (approval inputs of '{step}')")
