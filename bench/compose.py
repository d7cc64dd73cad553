"""subworkflow: what a sub-workflow step costs against a task step of ours, on real workers.

A chain of n steps that each run a one-step child workflow (``ours_s``), against a chain of n task
steps (``baseline_s``: our own task steps here, not raw Celery). Same worker, Redis and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench.env import Services
from bench.runs import Ours, chain_plan, line
from orchestrator.definition import Plan, WorkflowBuilder, build_plan


def child_plan() -> Plan:
    wf = WorkflowBuilder("bench-child")
    wf.step("only", "bench.tasks:noop")
    return build_plan(wf.build(), check_tasks=False)


def nested_plan(n: int) -> Plan:
    wf = WorkflowBuilder("bench-nested")
    previous = None
    for i in range(n):
        previous = wf.workflow(f"s{i}", "bench-child", needs=[previous] if previous else [])
    return build_plan(wf.build(), check_tasks=False)


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    n = 20 if quick else 200
    with services.worker("ours"):
        ours = Ours()
        ours.operations.register(ours.engine, child_plan())
        ours.run(chain_plan(5, "bench-warmup"), [{}], 60)
        tasks = ours.run(chain_plan(n, "bench-linear-tasks"), [{}], 600)
        nested = ours.run(nested_plan(n), [{}], 600)
    yield line("subworkflow", n, tasks, nested, against="our task steps", per_step_ms=round(nested / n * 1000, 2))
