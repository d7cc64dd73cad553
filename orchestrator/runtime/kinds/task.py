"""The task kind: a function (``module:function``) or a registered Celery task, run by a worker.

It starts by queueing one constant-size message; a worker's delivery of that message runs the
function through the middleware (``runtime.executor``), and the function's return value is the
step's output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import StepPlan
from orchestrator.runtime.kinds import StepKind
from orchestrator.store import StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer


class TaskKind(StepKind):
    name: ClassVar[str] = "task"
    options: ClassVar[frozenset[str]] = frozenset({"with"})
    queues: ClassVar[bool] = True

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        advancer.queue(row, inputs)
