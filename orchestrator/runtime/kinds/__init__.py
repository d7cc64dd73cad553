"""Step kinds: how a step of each kind starts, what completes it, and what it outputs.

The scheduler and the store treat every kind alike: a step is pending until its needs end, then
its kind starts it with its rendered ``with``; whatever completes it records the output and hands
the step back to the scheduler, which settles it like any other. A kind that waits (``workflow``,
``wait``, ``approval``) leaves its step ``waiting``, holding no worker, and says what waking it means.
Adding a kind is one module here and one entry in ``default_kinds``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import StepPlan
from orchestrator.errors import OrchestratorError
from orchestrator.store import StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer


class StepKind:
    """One kind of step. ``name`` is the step key that selects it; ``options`` the keys it owns."""

    name: ClassVar[str]
    options: ClassVar[frozenset[str]] = frozenset()
    queues: ClassVar[bool] = False  # True: its foreach items go to workers as messages

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        """Begin the step (its needs are met, its ``if`` held, ``inputs`` are rendered)."""
        raise NotImplementedError

    def wake(self, advancer: Advancer, row: StepRow, step: StepPlan) -> None:
        """A waiting step of this kind is due or was woken (kinds that wait only)."""
        raise OrchestratorError(f"step '{step.id}' is a {self.name} step, which never waits")


class Kinds:
    """The kinds this orchestrator runs, by the step key that selects each."""

    def __init__(self, kinds: list[StepKind]) -> None:
        self.by_name = {kind.name: kind for kind in kinds}

    @property
    def options(self) -> frozenset[str]:
        return frozenset().union(*(k.options | {k.name} for k in self.by_name.values()))

    def of(self, step: StepPlan) -> StepKind:
        for name, kind in self.by_name.items():
            if getattr(step.step, name, None) is not None:
                return kind
        raise OrchestratorError(f"step '{step.id}' is of no kind this orchestrator runs ({', '.join(self.by_name)})")


def default_kinds() -> Kinds:
    from orchestrator.runtime.kinds.approval import ApprovalKind
    from orchestrator.runtime.kinds.task import TaskKind
    from orchestrator.runtime.kinds.wait import WaitKind
    from orchestrator.runtime.kinds.workflow import WorkflowKind

    return Kinds([TaskKind(), WorkflowKind(), WaitKind(), ApprovalKind()])


__all__ = ["Kinds", "StepKind", "default_kinds"]
