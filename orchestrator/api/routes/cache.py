"""``/api/v1`` routes: the step cache (see docs/http-api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from orchestrator.api.deps import Admin, Body, Name, Store, Viewer, who
from orchestrator.runtime.caching import cached_entries, clear_cache

router = APIRouter(tags=["cache"])
MAX_LIST = 500


class Clear(Body):
    workflow: Name | None = None
    step: Name | None = None


@router.get("/cache", dependencies=[Viewer])
def list_entries(
    store: Store,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    step: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> list[dict[str, Any]]:
    """``cache list --json``: entries, newest first."""
    return cached_entries(store, workflow, step, limit)


@router.post("/cache/clear")
def clear(store: Store, actor: Admin, body: Clear | None = None) -> dict[str, int]:
    """Delete cached entries: all of them, a workflow's, or one step's (with ``workflow``)."""
    body = body or Clear()
    return {"cleared": clear_cache(store, body.workflow, body.step, who(actor, body))}
