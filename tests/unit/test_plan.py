from __future__ import annotations

import gc

from orchestrator.definition import build_plan, plan_file
from orchestrator.definition.model import Workflow


def test_fork_join_plan_has_levels_and_a_join() -> None:
    plan = plan_file("config/examples/fork-join.yaml")
    assert plan.levels == (("start",), ("double", "triple", "plus-ten"), ("join",))
    assert plan.roots == ("start",)
    assert plan.joins == ("join",)
    assert plan.steps["start"].dependents == ("double", "triple", "plus-ten")
    assert plan.order[0] == "start" and plan.order[-1] == "join"


def test_steps_render_their_arguments_from_upstream_outputs() -> None:
    plan = plan_file("config/examples/foreach.yaml")
    price = plan.steps["price"]
    assert price.foreach is not None
    items = price.foreach.render({"steps": {"fetch": {"output": {"items": ["a", "b"]}}}})
    assert items == ["a", "b"]
    assert price.arguments.render({"item": "a", "index": 0}) == {"item": "a", "position": 0}
    assert price.step.concurrency == 2


def test_plan_version_is_the_content_hash() -> None:
    plan = plan_file("config/examples/linear.yaml")
    assert plan.version == plan.workflow.content_hash()
    assert len(plan.version) == 16


def test_a_wide_generated_dag_plans() -> None:
    steps = {f"s{i}": {"task": "m:f", "needs": [f"s{j}" for j in (i - 1, i // 2) if 0 <= j < i]} for i in range(2000)}
    steps = {k: {**v, "needs": sorted(set(v["needs"]))} for k, v in steps.items()}
    plan = build_plan(Workflow.model_validate({"name": "big", "steps": steps}), check_tasks=False)
    position = {s: i for i, s in enumerate(plan.order)}
    assert all(position[n] < position[s] for s, v in steps.items() for n in v["needs"])


def test_planning_leaves_the_collector_as_it_found_it() -> None:
    workflow = Workflow.model_validate({"name": "gc", "steps": {"a": {"task": "m:f"}}})
    assert gc.isenabled()
    build_plan(workflow, check_tasks=False)
    assert gc.isenabled()
    gc.disable()
    try:
        build_plan(workflow, check_tasks=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()  # as a pre-forking server does: planning must not unfreeze it
    try:
        frozen = gc.get_freeze_count()
        build_plan(workflow, check_tasks=False)
        # a frozen object that dies meanwhile leaves the permanent generation; an unfreeze empties it
        assert gc.get_freeze_count() >= frozen - 1000
    finally:
        gc.unfreeze()
