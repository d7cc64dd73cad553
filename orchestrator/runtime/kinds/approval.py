"""The approval kind: a step that waits for people to decide, holding no worker.

Decisions are recorded one by one (``runtime.approval``); the decisive one (the last approval of
the quorum, or any rejection) wakes the step, and its deadline does too. The output names every
approver, the comment and the data they gave.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import StepPlan
from orchestrator.definition.duration import format_duration
from orchestrator.definition.model import OnTimeout
from orchestrator.errors import ApprovalRejected
from orchestrator.runtime.kinds import StepKind
from orchestrator.store import StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer


def approval_output(decisions: list[dict[str, Any]], at: Any, timed_out: bool = False) -> dict[str, Any]:
    approved = [d for d in decisions if d["decision"] == "approved"]
    data: dict[str, Any] = {}
    for d in approved:
        if isinstance(d["data"], dict):
            data.update(d["data"])
    comments = [d["comment"] for d in approved if d["comment"]]
    output = {
        "decision": "approved",
        "by": [d["actor"] for d in approved],
        "comment": comments[-1] if comments else None,
        "data": data,
        "at": at.isoformat(),
    }
    if timed_out:
        output["timed_out"] = True
    return output


class ApprovalKind(StepKind):
    name: ClassVar[str] = "approval"

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        timeout = inputs.get("timeout")
        due = advancer.at + timedelta(seconds=timeout) if timeout else None
        advancer.wait(row, inputs, "approval", due)

    def wake(self, advancer: Advancer, row: StepRow, step: StepPlan) -> None:
        spec = step.step.approval
        assert spec is not None
        decisions = advancer.tx.decisions([row.id], row.dispatch_id)
        if row.wake == "approved":
            advancer.complete(row, approval_output(decisions, advancer.at), "approved")
        elif advancer.plan.machine is not None and row.wake == "rejected":
            # in a state machine a rejection is an outcome the transitions choose on, not a failure
            rejection = next(d for d in reversed(decisions) if d["decision"] == "rejected")
            output = {"decision": "rejected", "by": [rejection["actor"]], "comment": rejection["comment"]}
            advancer.complete(row, {**output, "data": {}, "at": advancer.at.isoformat()}, "rejected")
        elif row.wake == "rejected":
            rejection = next(d for d in reversed(decisions) if d["decision"] == "rejected")
            comment = f": {rejection['comment']}" if rejection["comment"] else ""
            advancer.fail_waiting(row, ApprovalRejected(f"rejected by {rejection['actor']}{comment}"))
        elif spec.on_timeout is OnTimeout.APPROVE:
            advancer.complete(row, approval_output(decisions, advancer.at, timed_out=True), "approved")
        else:
            waited = format_duration(spec.timeout or 0)
            advancer.fail_waiting(row, ApprovalRejected(f"no decision within {waited} (on_timeout: reject)"))
