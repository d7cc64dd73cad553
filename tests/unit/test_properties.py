"""Property tests: any DAG validates, and its plan respects every edge."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definition import build_plan
from orchestrator.definition.model import Workflow


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """A random DAG: each step may need any of the steps generated before it."""
    size = draw(st.integers(min_value=1, max_value=40))
    names = [f"s{i}" for i in range(size)]
    draw(st.randoms()).shuffle(names)
    graph: dict[str, list[str]] = {}
    for position, name in enumerate(names):
        earlier = names[:position]
        graph[name] = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) if earlier else []
    return graph


def as_workflow(graph: dict[str, list[str]]) -> Workflow:
    steps = {
        name: {
            "task": "m:f",
            "needs": needs,
            "with": {n: f"${{{{ steps.{n}.output }}}}" for n in needs},
        }
        for name, needs in graph.items()
    }
    return Workflow.model_validate({"name": "random", "steps": steps})


@settings(max_examples=150, deadline=None)
@given(dags())
def test_random_dags_validate_and_the_plan_respects_every_edge(graph: dict[str, list[str]]) -> None:
    plan = build_plan(as_workflow(graph), check_tasks=False)
    assert sorted(plan.order) == sorted(graph)
    position = {step: i for i, step in enumerate(plan.order)}
    level = {step: depth for depth, members in enumerate(plan.levels) for step in members}
    for step, needs in graph.items():
        for need in needs:
            assert position[need] < position[step]
            assert level[need] < level[step]
            assert step in plan.steps[need].dependents
        # Each step sits on the first level its needs allow: one past its deepest need.
        assert level[step] == (max(level[n] for n in needs) + 1 if needs else 0)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_adding_a_back_edge_is_reported_as_a_cycle(graph: dict[str, list[str]], data: st.DataObject) -> None:
    from orchestrator.errors import InvalidDefinition

    chains = [(s, n) for s, needs in graph.items() for n in needs]
    if not chains:
        return
    step, need = data.draw(st.sampled_from(chains))
    graph[need] = [*graph[need], step]  # need now also needs step: a cycle
    try:
        build_plan(as_workflow(graph), check_tasks=False)
    except InvalidDefinition as exc:
        cycles = [p.message for p in exc.problems if p.message.startswith("cycle: ")]
        assert cycles
        for message in cycles:
            path = message.removeprefix("cycle: ").split(" -> ")
            assert path[0] == path[-1]
            for before, after in zip(path, path[1:], strict=False):
                assert before in graph[after], f"{before} -> {after} is not an edge"
    else:
        raise AssertionError("a cycle was accepted")
