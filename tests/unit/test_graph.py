"""The plan as a graph for the web UI: DAG layers, foreach and sub-workflow nodes, state machines
with labelled transitions, and the graphs of runs and registered versions."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.definition import Plan, build_plan, load_text
from orchestrator.errors import NotFound
from orchestrator.runtime import operations, versions
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.graph import plan_graph, run_graph, workflow_graph

SHOP = """
name: shop
steps:
  fetch: {task: "m:fetch"}
  price:
    needs: fetch
    foreach: "${{ steps.fetch.output.items }}"
    task: "m:price"
    with: {item: "${{ item }}"}
  audit: {needs: fetch, workflow: "audit-order"}
  charge: {needs: [price, audit], task: "m:charge"}
  sign-off: {needs: charge, approval: {}}
"""

REVIEW = """
name: review
initial: draft
states:
  draft: {task: "m:write", next: review}
  review:
    approval: {}
    transitions:
      - {to: publish, if: "${{ output.decision == 'approved' }}"}
      - {to: draft}
  publish: {task: "m:publish", next: done}
  done: {end: succeeded}
"""


def plan_of(text: str) -> Plan:
    return build_plan(load_text(text).workflow, check_tasks=False)


def test_a_dag_is_its_steps_by_layer_with_one_edge_per_need() -> None:
    graph = plan_graph(plan_of(SHOP))

    assert graph["kind"] == "dag" and graph["workflow"] == "shop"
    layers = {n["id"]: n["layer"] for n in graph["nodes"]}
    assert layers == {"fetch": 0, "price": 1, "audit": 1, "charge": 2, "sign-off": 3}
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert edges == {
        ("fetch", "price"),
        ("fetch", "audit"),
        ("price", "charge"),
        ("audit", "charge"),
        ("charge", "sign-off"),
    }
    assert all(e["label"] is None for e in graph["edges"])


def test_a_foreach_is_one_node_and_a_sub_workflow_names_its_workflow() -> None:
    nodes = {n["id"]: n for n in plan_graph(plan_of(SHOP))["nodes"]}

    assert nodes["price"]["foreach"] is True and nodes["price"]["kind"] == "task"
    assert nodes["fetch"]["foreach"] is False
    assert nodes["audit"]["kind"] == "workflow" and nodes["audit"]["workflow"] == "audit-order"
    assert nodes["sign-off"]["kind"] == "approval" and nodes["sign-off"]["workflow"] is None
    assert nodes["charge"]["label"] == "charge" and nodes["charge"]["detail"] == "m:charge"


def test_a_state_machine_is_its_states_by_distance_with_transitions_labelled_by_their_if() -> None:
    graph = plan_graph(plan_of(REVIEW))

    assert graph["kind"] == "machine" and graph["initial"] == "draft"
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert {s: n["layer"] for s, n in nodes.items()} == {"draft": 0, "review": 1, "publish": 2, "done": 3}
    assert nodes["done"]["kind"] == "end" and nodes["done"]["end"] == "succeeded"
    assert nodes["review"]["kind"] == "approval" and nodes["review"]["end"] is None
    edges = {(e["from"], e["to"]): e["label"] for e in graph["edges"]}
    assert edges == {
        ("draft", "review"): None,
        ("review", "publish"): "${{ output.decision == 'approved' }}",
        ("review", "draft"): None,
        ("publish", "done"): None,
    }


def test_a_wide_dag_keeps_one_node_per_step_and_linear_edges() -> None:
    steps = "\n".join(f"  s{i}: {{task: 'm:f', needs: [root]}}" for i in range(1000))
    graph = plan_graph(plan_of(f"name: wide\nsteps:\n  root: {{task: 'm:f'}}\n{steps}\n"))

    assert len(graph["nodes"]) == 1001 and len(graph["edges"]) == 1000
    assert sum(1 for n in graph["nodes"] if n["layer"] == 1) == 1000


def test_a_run_graph_is_the_version_it_pinned_and_a_workflow_graph_its_active_version(engine: Engine) -> None:
    # Given shop registered, a run of it, then a second version registered and active
    first = plan_of(SHOP)
    versions.register(engine, first)
    run_id = operations.submit(engine, operations.registered_plan(engine, "shop"), {}).run_id
    second = plan_of(SHOP.replace("m:charge", "m:charge2"))
    versions.register(engine, second)

    # Then the run's graph is still the first version's; the workflow's is the active one's
    assert run_graph(engine.repo, run_id)["version"] == first.version
    assert workflow_graph(engine.repo, "shop")["version"] == second.version
    assert workflow_graph(engine.repo, "shop", first.version[:8])["version"] == first.version
    charge = next(n for n in workflow_graph(engine.repo, "shop")["nodes"] if n["id"] == "charge")
    assert charge["detail"] == "m:charge2"


def test_unknown_runs_workflows_and_versions_are_not_found(engine: Engine) -> None:
    versions.register(engine, plan_of(SHOP))
    with pytest.raises(NotFound):
        run_graph(engine.repo, "no-such-run")
    with pytest.raises(NotFound):
        workflow_graph(engine.repo, "no-such-workflow")
    with pytest.raises(NotFound):
        workflow_graph(engine.repo, "shop", "ffffffff")


def test_the_graph_routes_answer_a_viewer_and_refuse_no_token(engine: Engine) -> None:
    import asyncio

    import httpx

    from orchestrator.api.app import create_app
    from orchestrator.api.tokens import Token

    # Given the app with a viewer token, and a run of shop
    versions.register(engine, plan_of(SHOP))
    run_id = operations.submit(engine, operations.registered_plan(engine, "shop"), {}).run_id
    app = create_app(engine.repo, list, [Token("vera", "viewer", "v-secret")], 0.0)
    viewer = {"Authorization": "Bearer v-secret"}

    async def get(path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui") as client:
            return await client.get(path, **kwargs)

    # Then a viewer gets the graphs; no token is a 401
    by_run = asyncio.run(get(f"/api/v1/runs/{run_id}/graph", headers=viewer))
    assert by_run.status_code == 200 and by_run.json()["kind"] == "dag"
    assert {n["id"] for n in by_run.json()["nodes"]} == {"fetch", "price", "audit", "charge", "sign-off"}
    version = by_run.json()["version"]
    by_name = asyncio.run(get("/api/v1/workflows/shop/graph", headers=viewer, params={"version": version}))
    assert by_name.json() == by_run.json()
    assert asyncio.run(get(f"/api/v1/runs/{run_id}/graph")).status_code == 401
