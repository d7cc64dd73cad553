"""compile: static validation + planning of an already-loaded model, against graphlib.

The generated DAG has about two edges per step, and every step reads a need's output through an
expression, as real workflows do. YAML parsing and model construction are outside the timing.
"""

from __future__ import annotations

import graphlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.definition import build_plan
from orchestrator.definition.model import Workflow

REPEATS = 3


def generate(n: int, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    graph: dict[str, list[str]] = {}
    for i in range(n):
        needs = {f"s{i - 1}", f"s{rng.randrange(i)}"} if i > 1 else ({"s0"} if i == 1 else set())
        graph[f"s{i}"] = sorted(needs)
    return graph


def as_workflow(graph: dict[str, list[str]]) -> Workflow:
    steps: dict[str, Any] = {}
    for name, needs in graph.items():
        step: dict[str, Any] = {"task": "orchestrator.examples:add", "needs": needs}
        if needs:
            step["with"] = {"a": f"${{{{ steps.{needs[0]}.output }}}}", "b": 1}
        steps[name] = step
    return Workflow.model_validate({"name": "generated", "steps": steps})


def best_of(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def graphlib_order(graph: dict[str, list[str]]) -> list[str]:
    return list(graphlib.TopologicalSorter(graph).static_order())


def run(quick: bool) -> Iterator[dict[str, Any]]:
    sizes = (1_000, 10_000) if quick else (10_000, 100_000)
    for n in sizes:
        graph = generate(n)
        workflow = as_workflow(graph)
        baseline = best_of(lambda g=graph: graphlib_order(g))  # type: ignore[misc]
        ours = best_of(lambda w=workflow: build_plan(w))  # type: ignore[misc]
        yield {
            "name": "compile",
            "n": n,
            "baseline_s": round(baseline, 6),
            "ours_s": round(ours, 6),
            "ratio": round(ours / baseline, 2),
        }
