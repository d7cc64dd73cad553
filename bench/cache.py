"""cache_hit: what a cached step costs against running it, on real workers.

Three chains of n steps, each step with its own inputs: plain task steps (``baseline_s``), the same
steps with ``cache: {}`` on their first run (every step a miss: it runs, and its entry is written
with its success), and again (every step a hit: no call, no attempt). Once with a step that does
nothing (the orchestration alone) and once with one that works for 20 ms (what a hit saves).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench.env import Services
from bench.runs import Ours, chain_plan, line
from orchestrator.definition import Plan, WorkflowBuilder, build_plan


def cached_chain(n: int, name: str, task: str, cache: bool) -> Plan:
    wf = WorkflowBuilder(name)
    previous = None
    for i in range(n):
        options: dict[str, Any] = {"cache": {}} if cache else {}
        with_ = {"i": i, "ms": 20} if task.endswith("work") else {"i": i}
        previous = wf.step(f"s{i}", task, needs=[previous] if previous else [], with_=with_, **options)
    return build_plan(wf.build(), check_tasks=False)


def run(services: Services, quick: bool) -> Iterator[dict[str, Any]]:
    n = 20 if quick else 200
    with services.worker("ours"):
        ours = Ours()
        ours.run(chain_plan(5, "bench-warmup"), [{}], 60)
        for task in ("bench.tasks:noop", "bench.tasks:work"):
            label = task.rpartition(":")[2]
            plain = ours.run(cached_chain(n, f"bench-plain-{label}", task, cache=False), [{}], 600)
            miss = ours.run(cached_chain(n, f"bench-cached-{label}", task, cache=True), [{}], 600)
            hit = ours.run(cached_chain(n, f"bench-cached-{label}", task, cache=True), [{}], 600)
            yield line(
                f"cache_hit_{label}",
                n,
                plain,
                hit,
                against="the same task steps uncached",
                miss_s=round(miss, 3),
                step_ms=round(plain / n * 1000, 2),
                miss_ms=round(miss / n * 1000, 2),
                hit_ms=round(hit / n * 1000, 2),
            )
