"""The workflow kind: a step that runs a registered workflow as a child run and waits for it,
holding no worker.

The child is created and started in the parent's transaction, so a step is never waiting on a
child that does not exist. When the child ends, its last transaction marks the parent's step due
(only if that step still waits on that very child) and a wake-up message, or the reconciler,
completes the step with the child's outputs, or fails it with the child's error.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import Plan, StepPlan
from orchestrator.definition.model import split_ref
from orchestrator.errors import ChildRunFailed, ChildRunRefused, InputsError, NotFound, UsageError
from orchestrator.runtime.kinds import StepKind
from orchestrator.settings import get_settings
from orchestrator.status import RunStatus
from orchestrator.store import StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer


class WorkflowKind(StepKind):
    name: ClassVar[str] = "workflow"
    options: ClassVar[frozenset[str]] = frozenset({"with"})

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        child_id = str(uuid.uuid4())
        advancer.wait(row, inputs, "workflow", None, key=child_id)
        try:
            plan = self._child_plan(advancer, step, inputs)
        except ChildRunRefused as exc:
            advancer.fail_waiting(row, exc)
            return
        tx, parent = advancer.tx, advancer.run
        needs = plan.first_rows()
        origin = {
            "parent_run_id": parent.id,
            "parent_step_run_id": row.id,
            "depth": parent.depth + 1,
            "chain_depth": parent.chain_depth,
        }
        tx.insert_run(child_id, plan.workflow.name, plan.version, inputs, None, needs, **origin)
        child = tx.lock_run(child_id)
        assert child is not None and advancer.runtime is not None
        advancer.event("step.child_started", row, {"child_run": child_id, "workflow": plan.workflow.name})
        advancer.dispatches += advancer.runtime.advancer(tx, plan, child).start()

    def wake(self, advancer: Advancer, row: StepRow, step: StepPlan) -> None:
        child = advancer.tx.run(row.wait_key or "")
        if child is not None and child.status is RunStatus.SUCCEEDED:
            advancer.complete(row, child.outputs, "child_succeeded")
            return
        if child is None:
            error = ChildRunFailed(f"child run {row.wait_key} is gone")
        else:
            cause = f": {child.error}" if child.error else ""
            error = ChildRunFailed(f"child run {child.id} ({child.workflow}) {child.status}{cause}")
            # the step's retry starts a new child, or its own dead-letter entry stands for the
            # child's failure: the old child's entries are not to be replayed on their own
            advancer.tx.resolve_dead_letters_of_run(child.id, advancer.at)
        advancer.fail_waiting(row, error)

    def _child_plan(self, advancer: Advancer, step: StepPlan, inputs: Any) -> Plan:
        from orchestrator.runtime.operations import check_inputs

        assert step.step.workflow is not None and advancer.runtime is not None
        name, _ = split_ref(step.step.workflow)
        depth, limit = advancer.run.depth + 1, get_settings().max_depth
        if depth > limit:
            raise ChildRunRefused(
                f"workflow {name} would be nested {depth} levels deep; ORCHESTRATOR_MAX_DEPTH allows {limit}"
            )
        from orchestrator.runtime.versions import resolve_target

        try:  # the active version, or the pinned one (a unique prefix of its hash will do)
            found = resolve_target(advancer.tx, step.step.workflow)
        except NotFound as exc:
            if advancer.tx.registrations(name):
                raise ChildRunRefused(exc.message) from None
            raise ChildRunRefused(
                f"no workflow named '{name}' is registered (orchestrator workflows register FILE)"
            ) from None
        except UsageError as exc:
            raise ChildRunRefused(exc.message) from None
        try:
            plan: Plan = advancer.runtime.plans.get(advancer.tx, found)
        except NotFound:
            raise ChildRunRefused(f"workflow {name} has no version {found}") from None
        if plan.workflow.name != name:
            raise ChildRunRefused(f"version {found} is of workflow {plan.workflow.name}, not {name}")
        try:
            check_inputs(plan.workflow, inputs)
        except InputsError as exc:
            raise ChildRunRefused(f"the child's inputs: {exc.message}") from None
        return plan
