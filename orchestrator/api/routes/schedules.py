"""``/api/v1`` routes: schedules, named WORKFLOW/NAME (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from orchestrator.api.deps import Admin, Body, Runtime, Store, Viewer, who
from orchestrator.runtime import schedules

router = APIRouter(tags=["schedules"])


@router.get("/schedules", dependencies=[Viewer])
def list_schedules(store: Store, workflow: Annotated[str | None, Query(max_length=200)] = None) -> list[dict[str, Any]]:
    """``schedules list --json``: spec, time zone, next fire times, last run, paused."""
    return schedules.schedules_view(store, workflow)


@router.post("/schedules/{workflow}/{name}/pause")
def pause(workflow: str, name: str, engine: Runtime, actor: Admin, body: Body | None = None) -> dict[str, Any]:
    full = f"{workflow}/{name}"
    return {"schedule": full, "changed": schedules.pause(engine, full, who(actor, body))}


@router.post("/schedules/{workflow}/{name}/resume")
def resume(workflow: str, name: str, engine: Runtime, actor: Admin, body: Body | None = None) -> dict[str, Any]:
    full = f"{workflow}/{name}"
    return {"schedule": full, "changed": schedules.resume(engine, full, who(actor, body))}


@router.post("/schedules/{workflow}/{name}/trigger")
def trigger(workflow: str, name: str, engine: Runtime, actor: Admin, body: Body | None = None) -> dict[str, Any]:
    """Start a run of the schedule now, recorded as manual."""
    return schedules.trigger(engine, f"{workflow}/{name}", who(actor, body)).as_json()
