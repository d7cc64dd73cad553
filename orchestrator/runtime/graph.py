"""A definition's plan as a graph, for the web UI: nodes with the layer they are drawn in, edges.

The graph is the plan's, not a run's state: a DAG's layers are the plan's levels (the same
Kahn layering the scheduler uses); a state machine's nodes are its states, laid out by their
distance from ``initial``, and its edges are its transitions, labelled with their ``if``.
A graph depends only on the definition version, so each version's is built once per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from orchestrator.definition import Plan, build_plan
from orchestrator.definition.machine import MachinePlan
from orchestrator.definition.model import Workflow
from orchestrator.errors import NotFound, shown
from orchestrator.runtime.versions import resolve, resolve_target
from orchestrator.store import Repository, Tx

_CACHED_GRAPHS = 64
_graphs: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()  # the routes run in a thread pool


def run_graph(repo: Repository, run_id: str) -> dict[str, Any]:
    """The graph of the definition ``run_id`` pinned when it started; NotFound for an unknown run."""
    with repo.transaction() as tx:
        run = tx.run(run_id)
        if run is None:
            raise NotFound(f"no run {shown(run_id)}")
        return _graph_of(tx, run.version)


def workflow_graph(repo: Repository, name: str, version: str | None = None) -> dict[str, Any]:
    """The graph of a registered workflow's ``version`` (a hash or a unique prefix; default: the
    active one); NotFound for an unknown workflow or version."""
    with repo.transaction() as tx:
        found = resolve(tx, name, version) if version else resolve_target(tx, name)
        return _graph_of(tx, found)


def _graph_of(tx: Tx, version: str) -> dict[str, Any]:
    with _lock:
        graph = _graphs.get(version)
        if graph is not None:
            _graphs.move_to_end(version)
            return graph
    snapshot = tx.definition(version)
    if snapshot is None:
        raise NotFound(f"no definition with version {shown(version)}")
    graph = plan_graph(build_plan(Workflow.model_validate(snapshot), check_tasks=False))
    with _lock:
        _graphs[version] = graph
        if len(_graphs) > _CACHED_GRAPHS:
            _graphs.popitem(last=False)
    return graph


def plan_graph(plan: Plan) -> dict[str, Any]:
    """The graph shape of docs/http-api.md: ``kind``, ``workflow``, ``version``, ``nodes``, ``edges``."""
    head = {"workflow": plan.workflow.name, "version": plan.version}
    if plan.machine is not None:
        return {"kind": "machine", **head, "initial": plan.machine.initial, **_machine(plan, plan.machine)}
    nodes = [_node(plan, step_id, layer) for layer, level in enumerate(plan.levels) for step_id in level]
    edges = [
        {"from": need, "to": step_id, "label": None} for step_id in plan.order for need in plan.steps[step_id].needs
    ]
    return {"kind": "dag", **head, "nodes": nodes, "edges": edges}


def _node(plan: Plan, step_id: str, layer: int) -> dict[str, Any]:
    sp = plan.steps[step_id]
    return {
        "id": step_id,
        "kind": sp.kind,
        "layer": layer,
        "foreach": sp.step.foreach is not None,
        "workflow": sp.step.workflow,
        "label": step_id,
        "detail": sp.label if sp.kind != "end" else None,
    }


def _machine(plan: Plan, machine: MachinePlan) -> dict[str, Any]:
    """States by their distance from ``initial`` (breadth first: loops go back to a lower layer)."""
    depth = {machine.initial: 0}
    frontier = [machine.initial]
    while frontier:
        following = []
        for state in frontier:
            for route in machine.routes.get(state, ()):
                if route.to not in depth:
                    depth[route.to] = depth[state] + 1
                    following.append(route.to)
        frontier = following
    states = sorted(plan.workflow.states, key=lambda s: depth.get(s, len(depth)))
    nodes = []
    for state in states:
        node = _node(plan, state, depth.get(state, len(depth)))
        node["end"] = str(machine.ends[state]) if state in machine.ends else None
        nodes.append(node)
    edges = [
        {"from": state, "to": route.to, "label": None if route.condition is None else route.text}
        for state in plan.workflow.states
        for route in machine.routes.get(state, ())
    ]
    return {"nodes": nodes, "edges": edges}
