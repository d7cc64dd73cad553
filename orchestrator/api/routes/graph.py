"""``/api/v1`` routes: graph (see docs/http-api.md): a run's or a workflow version's plan as a graph."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from orchestrator.api.auth import require
from orchestrator.runtime.graph import run_graph, workflow_graph

router = APIRouter(dependencies=[Depends(require("viewer"))])


@router.get("/runs/{run_id}/graph")
def get_run_graph(run_id: str, request: Request) -> dict[str, Any]:
    """The plan the run pinned, as nodes (with their layer) and edges; the run's state is not in it."""
    return run_graph(request.app.state.repo, run_id)


@router.get("/workflows/{name}/graph")
def get_workflow_graph(name: str, request: Request, version: str | None = Query(None)) -> dict[str, Any]:
    """A registered workflow's version (default: the active one) as a graph."""
    return workflow_graph(request.app.state.repo, name, version)
